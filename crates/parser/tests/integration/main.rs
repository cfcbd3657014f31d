//! Integration tests of strata-parser: the real-world corpus, seeded mutations, and insta
//! snapshots of typed ASTs, error messages and lint output for our own test files.

mod corpus;
mod snapshots;
