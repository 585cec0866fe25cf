//! `pg-member`, for the process group tests: a behaviour that joins a
//! group when it starts and, asked by a pid, sends that pid the group's
//! members as it sees them. Its membership lives in the host, so a test can
//! upgrade it and check that it is still a member.

use molt_sdk::{Behaviour, Message, Next, Pid};
use serde::{Deserialize, Serialize};

/// Init arguments: the group to join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgMemberArgs {
    /// Scope.
    pub scope: String,
    /// Group.
    pub group: String,
}

/// The state: which group it joined.
#[derive(Debug, Serialize, Deserialize)]
pub struct PgMember(PgMemberArgs);

impl Behaviour for PgMember {
    type Args = PgMemberArgs;
    /// Who asks for the members.
    type Msg = Pid;

    fn init(args: PgMemberArgs) -> Result<Self, String> {
        molt_sdk::pg::join(&args.scope, &args.group).map_err(|e| e.to_string())?;
        Ok(PgMember(args))
    }

    fn handle(&mut self, msg: Message<Pid>) -> Next {
        if let Message::Data(from) = msg {
            let members = molt_sdk::pg::members(&self.0.scope, &self.0.group);
            let _ = molt_sdk::send(from, &members);
        }
        Next::Continue
    }
}

molt_sdk::behaviour!(PgMember);
