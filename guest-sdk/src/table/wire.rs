//! Borrowed mirrors of `molt_abi::table`'s commit request, for the hot
//! paths: they encode exactly as the owned types do (a test checks), from
//! bytes the caller keeps, so a dirty write allocates nothing to encode.

use molt_abi::table::Condition;
use serde::{Serialize, Serializer};

/// `Request::Commit`'s position among `Request`'s variants.
const COMMIT_VARIANT: u32 = 9;

/// `Request::Commit(batches)`.
pub struct CommitRef<'a>(pub &'a [(&'a str, BatchRef<'a>)]);

impl Serialize for CommitRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_variant("Request", COMMIT_VARIANT, "Commit", self.0)
    }
}

/// `Batch`.
#[derive(Serialize)]
pub struct BatchRef<'a> {
    pub conditions: &'a [Condition],
    pub ops: &'a [OpRef<'a>],
}

/// `Op`, in the same order of variants.
#[derive(Serialize)]
pub enum OpRef<'a> {
    Put {
        #[serde(serialize_with = "molt_abi::bytes::serialize")]
        key: &'a [u8],
        #[serde(serialize_with = "molt_abi::bytes::serialize")]
        value: &'a [u8],
        index_values: &'a [Vec<u8>],
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use molt_abi::codec;
    use molt_abi::table::{Batch, Op, Request};

    #[test]
    fn a_borrowed_commit_encodes_as_the_owned_one() {
        let owned = Request::Commit(vec![(
            "kv".to_string(),
            Batch {
                conditions: vec![Condition::Absent { key: vec![1, 2] }],
                ops: vec![Op::Put {
                    key: vec![3; 9],
                    value: vec![4; 300],
                    index_values: vec![vec![5]],
                }],
            },
        )]);
        let index_values = [vec![5]];
        let conditions = [Condition::Absent { key: vec![1, 2] }];
        let ops = [OpRef::Put {
            key: &[3; 9],
            value: &[4; 300],
            index_values: &index_values,
        }];
        let batch = BatchRef {
            conditions: &conditions,
            ops: &ops,
        };
        let borrowed = CommitRef(&[("kv", batch)]);
        assert_eq!(codec::encode(&borrowed), codec::encode(&owned));
    }
}
