//! Content-addressed store for strata.
//!
//! This crate will own everything content: blobs under their sha256 in a valid OCI image
//! layout, the mutable refs (tags, cache records, containers) beside it, layer streams
//! (diffID, compression and blob digest in one pass), images, docker/OCI archives, locking and
//! garbage collection. It never looks inside filesystems and knows nothing of Dockerfiles.
