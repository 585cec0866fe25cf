//! Node-local names (Erlang's `register` / `whereis` / `unregister`).
//! A process has at most one name; its name is freed when it exits.

use std::collections::HashMap;

use molt_abi::{NAME_BYTES_MAX, Pid};

/// Why `register` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// Empty or longer than `NAME_BYTES_MAX`.
    BadName,
    /// Another process holds the name.
    Taken,
    /// The process already has a name.
    AlreadyRegistered,
}

#[derive(Default)]
pub(crate) struct Registry {
    by_name: HashMap<String, Pid>,
    by_pid: HashMap<Pid, String>,
}

impl Registry {
    pub fn register(&mut self, name: &str, pid: Pid) -> Result<(), RegisterError> {
        if name.is_empty() || name.len() > NAME_BYTES_MAX {
            return Err(RegisterError::BadName);
        }
        // A caller with a name (this one included) is already registered;
        // only then is another holder of the name the problem.
        if self.by_pid.contains_key(&pid) {
            return Err(RegisterError::AlreadyRegistered);
        }
        if self.by_name.contains_key(name) {
            return Err(RegisterError::Taken);
        }
        self.by_name.insert(name.to_string(), pid);
        self.by_pid.insert(pid, name.to_string());
        Ok(())
    }

    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.by_name.get(name).copied()
    }

    pub fn unregister(&mut self, name: &str) -> Option<Pid> {
        let pid = self.by_name.remove(name)?;
        self.by_pid.remove(&pid);
        Some(pid)
    }

    /// Free the name of a process that exited.
    pub fn remove_pid(&mut self, pid: Pid) {
        if let Some(name) = self.by_pid.remove(&pid) {
            self.by_name.remove(&name);
        }
    }

    pub fn name_of(&self, pid: Pid) -> Option<&str> {
        self.by_pid.get(&pid).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(serial: u64) -> Pid {
        Pid {
            node: 1,
            incarnation: 1,
            serial,
        }
    }

    #[test]
    fn one_name_per_process_and_per_name() {
        let mut r = Registry::default();
        assert_eq!(r.register("a", pid(1)), Ok(()));
        assert_eq!(r.register("a", pid(2)), Err(RegisterError::Taken));
        assert_eq!(
            r.register("b", pid(1)),
            Err(RegisterError::AlreadyRegistered)
        );
        assert_eq!(r.register("", pid(3)), Err(RegisterError::BadName));
        assert_eq!(r.whereis("a"), Some(pid(1)));
        r.remove_pid(pid(1));
        assert_eq!(r.whereis("a"), None);
        assert_eq!(r.register("b", pid(1)), Ok(()));
        assert_eq!(r.unregister("b"), Some(pid(1)));
        assert_eq!(r.name_of(pid(1)), None);
    }
}
