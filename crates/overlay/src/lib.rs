//! Snapshotter for strata: the filesystem side of building images.
//!
//! - **Layout** as Docker's `overlay2` (see [`layout`]): one folder per layer under
//!   `<store root>/overlay/`, with `diff/`, `link`, `lower`, `work/`, `merged/`, and short
//!   links `l/<id>` so mount options stay small. Committed layers are named by the caller
//!   (the builder passes chainIDs), so equal chains share folders.
//! - **API** cut like containerd's snapshotter ([`Snapshotter`]): `prepare`, `view`,
//!   `commit`, `remove`, `usage`, `walk`, with mounts returned as data ([`Mount`]) and
//!   performed by one small module.
//! - **Changesets** ([`Changeset`]) read from an upper dir (cost proportional to what changed)
//!   or from a double walk of two trees, streamed as a reproducible layer tar
//!   ([`write_tar`]) into any `Write`.
//! - **Unpacking** of untrusted layer tars from any `Read`, atomically, never writing outside
//!   the target (see [`in_root`] and [`unpack`]).
//! - **Drivers**: `overlay` (overlayfs) and `vfs` (a full copy per layer) behind the same API
//!   and producing the same bytes.
//!
//! It knows nothing of digests, images or Dockerfiles: snapshots are named by opaque keys.

pub mod changes;
mod copy;
pub mod diff;
mod error;
pub mod in_root;
pub mod layers;
pub mod layout;
pub mod meta;
pub mod mount;
mod probe;
mod snapshotter;
pub mod tar_read;
pub mod tar_write;
mod tree;
pub mod unpack;

pub use changes::{Change, ChangeKind, Changeset};
pub use diff::diff_dirs;
pub use error::{Error, Result};
pub use mount::{unmount, Mount, Strategy};
pub use snapshotter::{Driver, GraphDriverData, Info, Kind, LayerSource, Snapshotter, Usage};
pub use tar_read::{EntryHead, Limits, TarKind, TarReader};
pub use tar_write::{write_tar, TarOptions, TarStats};
pub use unpack::{apply_to_tree, UnpackOptions, UnpackStats};
