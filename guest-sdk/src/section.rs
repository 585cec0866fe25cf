//! The `molt.module` custom section: the module's name, version and ABI
//! version, written into the guest's own crate by [`module_section!`](crate::module_section!).

/// Length of the section text for a crate `name` and `version`.
#[doc(hidden)]
pub const fn text_len(name: &str, version: &str) -> usize {
    "name=".len()
        + name.len()
        + "\nversion=".len()
        + version.len()
        + "\nabi=".len()
        + digits(molt_abi::ABI_VERSION)
        + 1
}

const fn digits(mut n: u32) -> usize {
    let mut count = 1;
    while n >= 10 {
        n /= 10;
        count += 1;
    }
    count
}

const fn put(out: &mut [u8], mut at: usize, s: &[u8]) -> usize {
    let mut i = 0;
    while i < s.len() {
        out[at] = s[i];
        at += 1;
        i += 1;
    }
    at
}

/// The section content `name=<name>\nversion=<version>\nabi=<ABI_VERSION>\n`,
/// built at compile time. `N` must be [`text_len`]`(name, version)`.
#[doc(hidden)]
pub const fn text<const N: usize>(name: &str, version: &str) -> [u8; N] {
    assert!(N == text_len(name, version), "molt.module: wrong length");
    let mut out = [0u8; N];
    let mut at = put(&mut out, 0, b"name=");
    at = put(&mut out, at, name.as_bytes());
    at = put(&mut out, at, b"\nversion=");
    at = put(&mut out, at, version.as_bytes());
    at = put(&mut out, at, b"\nabi=");
    let end = at + digits(molt_abi::ABI_VERSION);
    let mut n = molt_abi::ABI_VERSION;
    let mut i = end;
    while i > at {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out[end] = b'\n';
    out
}

/// Emit the `molt.module` custom section for the calling crate, naming it
/// after its Cargo package (`CARGO_PKG_NAME`, `CARGO_PKG_VERSION`), or
/// `module_section!(name = "counter")` to give the module another name
/// (a new version of a module built from another package).
///
/// [`behaviour!`](crate::behaviour!) and [`main!`](crate::main!) call this;
/// use it alone only in a module that exports its entry points by hand.
/// Emit it once per module: two sections would be concatenated. Only
/// `wasm32` builds get the section.
#[macro_export]
macro_rules! module_section {
    () => {
        $crate::module_section!(name = ::core::env!("CARGO_PKG_NAME"));
    };
    (name = $name:expr) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            const NAME: &str = $name;
            const VERSION: &str = ::core::env!("CARGO_PKG_VERSION");
            const LEN: usize = $crate::section::text_len(NAME, VERSION);
            #[used]
            #[unsafe(link_section = "molt.module")]
            static MOLT_MODULE: [u8; LEN] = $crate::section::text::<LEN>(NAME, VERSION);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, version: &str) {
        // Same steps as the macro, with the lengths of this test's inputs.
        let text: Vec<u8> = match (name, version) {
            ("counter", "1.2.0") => {
                text::<{ text_len("counter", "1.2.0") }>("counter", "1.2.0").to_vec()
            }
            ("ping-pong", "0.1.0-rc.1+b7") => {
                text::<{ text_len("ping-pong", "0.1.0-rc.1+b7") }>("ping-pong", "0.1.0-rc.1+b7")
                    .to_vec()
            }
            _ => unreachable!(),
        };
        let declared = molt_abi::section::parse(&text).unwrap();
        assert_eq!(declared.name, name);
        assert_eq!(declared.version, version);
        assert_eq!(declared.abi, molt_abi::ABI_VERSION);
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            format!(
                "name={name}\nversion={version}\nabi={}\n",
                molt_abi::ABI_VERSION
            )
        );
    }

    #[test]
    fn section_parses_with_the_abi() {
        check("counter", "1.2.0");
        check("ping-pong", "0.1.0-rc.1+b7");
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(u32::MAX), 10);
    }

    #[test]
    fn this_crate_section_parses() {
        const NAME: &str = env!("CARGO_PKG_NAME");
        const VERSION: &str = env!("CARGO_PKG_VERSION");
        const TEXT: [u8; text_len(NAME, VERSION)] = text(NAME, VERSION);
        let declared = molt_abi::section::parse(&TEXT).unwrap();
        assert_eq!(
            (declared.name, declared.version, declared.abi),
            (NAME, VERSION, molt_abi::ABI_VERSION)
        );
    }
}
