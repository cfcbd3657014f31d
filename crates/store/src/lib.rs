//! Content-addressed store for strata.
//!
//! The store root is a valid OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`) that skopeo and umoci can read; beside it, in folders of its own, it
//! keeps the only mutable state (refs: tags, build-cache records, containers), layer records
//! (diffID <-> blob), temp files of blobs being written, and its locks.
//!
//! - Blobs are immutable and appear only whole and verified ([`BlobWriter`]).
//! - A layer is ingested as an uncompressed tar stream: diffID, compression and blob digest in
//!   one pass ([`Store::layer_writer`]); it is read back as a verified uncompressed tar
//!   ([`Store::open_layer`]).
//! - Images are manifest + config + layers; the image ID is the config digest; configs the
//!   store did not create are kept byte for byte ([`ImageConfig`], [`Image`]).
//! - Archives: docker-compatible and OCI `save`, and `load` of docker (legacy and OCI-inside)
//!   and OCI archives, plain or compressed ([`Store::save`], [`Store::load`]).
//! - Garbage collection marks from every ref and sweeps the rest; it reports the reachable
//!   layer chainIDs so the caller can sweep unpacked layers ([`Store::gc`]).
//!
//! - Registries: pull and push over the OCI distribution API, with Docker's credentials
//!   ([`registry`]).
//!
//! It never looks inside filesystems and knows nothing of Dockerfiles. It never prints:
//! progress goes through caller-supplied reporters.
//!
//! ```rust,no_run
//! use std::io::Write;
//! use strata_store::{Compression, ImageConfig, Reference, SaveOptions, Store};
//!
//! # fn main() -> strata_store::Result<()> {
//! let store = Store::open("/var/lib/strata".as_ref())?;
//! let lease = store.lease()?; // keep GC away until the image is tagged
//!
//! // A layer: write the uncompressed tar, get diffID, blob digest, size and media type back.
//! let mut w = store.layer_writer(Compression::Zstd)?;
//! w.write_all(b"...tar bytes...").unwrap();
//! let layer = w.finish()?;
//!
//! let image = store.write_image(&ImageConfig::default(), &[layer])?;
//! store.tag(&Reference::parse("example/app:1")?, &image)?;
//! drop(lease);
//!
//! // Read it back, verified.
//! let tar = store.open_layer(&image.layers[0].digest, &image.diff_ids[0])?;
//!
//! // Archives.
//! store.save_to_file(&["example/app:1"], "app.tar".as_ref(), &SaveOptions::default())?;
//! store.load(std::fs::File::open("app.tar").unwrap(), &mut |event| println!("{event:?}"))?;
//! # drop(tar);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod archive;
mod blob;
mod config;
mod descriptor;
mod digest;
mod direct;
mod dirfd;
mod error;
mod fsck;
mod fsutil;
mod gc;
mod image;
mod layer;
mod lock;
pub mod media;
mod record;
mod reference;
mod refs;
pub mod registry;
mod sources;
mod store;

pub use archive::{
    human_size, ArchiveFormat, LoadEvent, LoadOptions, LoadReport, LoadedImage, SaveOptions,
};
pub use blob::{BlobInfo, BlobWriter};
pub use config::{DockerExtensions, Healthcheck, ImageConfig};
pub use descriptor::Descriptor;
pub use digest::{chain_id, chain_ids, Digest, Hasher, HashingReader, HashingWriter};
pub use error::{Error, Result};
pub use fsck::{FsckOptions, FsckReport};
pub use gc::{DiskUsage, GcOptions, GcReport, ImageUsage, Reachable};
pub use image::{Image, ImageSummary};
pub use layer::{LayerInfo, LayerReader, LayerWriter};
pub use lock::Lease;
pub use media::Compression;
pub use record::Record;
pub use reference::Reference;
pub use refs::{Ref, RefKind, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
pub use store::{Store, MAX_JSON_BLOB};
