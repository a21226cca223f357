//! The storage seam for files: the only door through which the engine touches a file system.
//!
//! Sinks, job records, fences, the output marker, input files and the local checkpoint store
//! read and write through this module, never through `std::fs` (clippy's `disallowed-methods`
//! enforces it). In production every call is the `std::fs` call of the same name. Under
//! `--cfg madsim` the same calls reach an in-memory file system with a crash model, so that
//! the simulator can ask what a machine crash does to the engine's files:
//!
//! - **Data is volatile until `fsync`.** Bytes written to a file and not yet made durable by
//!   [`File::sync_all`] belong to the node that wrote them. When that node is killed, the file
//!   keeps its durable content plus a prefix of what came after, of a length drawn from the
//!   run's seed (a torn write); a file rewritten from scratch keeps either its old durable
//!   content or a prefix of the new one.
//! - **Names are volatile until the directory is synced.** Creating, renaming, linking and
//!   removing a file change its directory; [`sync_dir`] makes the directory's current names
//!   durable. When the node that made an unsynced change is killed, each change is either kept
//!   or undone (one draw per operation: a rename moves both of its names or neither).
//! - Directories are names too: a directory created and not yet synced into its parent is
//!   lost with everything below it when its node crashes (unless the draw keeps it).
//! - A crashed node does nothing more: until it restarts, its file operations fail (a process
//!   killed by a signal that lands a little after a moment may still be running for a while).
//! - Each node is a machine; the directories are on storage every machine shares (as a network
//!   file system), and readers see its current state, durable or not (the file server's cache).
//!   A machine that crashes loses what it wrote and did not sync. What a reader can rely on
//!   across crashes is the durable state ([`sim::durable_files`]).
//! - A crash lands where the simulator aims it: at an `await` (a node killed), at a protocol
//!   moment, or at a node's n-th file operation (then inside a sequence of file operations, the
//!   operation itself not done).
//!
//! Durability helpers ([`write_durable`], [`create_dir_all_durable`]) are built on the
//! primitives, so production and simulation take exactly the same steps.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (lossily decoded).
    pub name: String,
    /// Its full path.
    pub path: PathBuf,
    /// Whether it is a directory (otherwise a file).
    pub is_dir: bool,
}

/// What [`metadata`] tells of a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// A directory (otherwise a file).
    pub is_dir: bool,
    /// Length in bytes (files).
    pub len: u64,
}

/// An open file: created for writing, or opened for reading.
#[derive(Debug)]
pub struct File {
    #[cfg(not(madsim))]
    inner: std::fs::File,
    #[cfg(madsim)]
    inner: sim::OpenFile,
}

/// An exclusive advisory lock on a file, held until dropped: read-modify-write of a small
/// record (an output fence, a conditional put) by several processes on one machine or a shared
/// file system.
#[derive(Debug)]
pub struct Lock {
    #[cfg(not(madsim))]
    _file: std::fs::File,
}

#[cfg(not(madsim))]
#[allow(clippy::disallowed_methods)] // the seam itself
mod imp {
    use super::*;

    pub fn create_dir_all(path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    pub fn read(path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    pub fn write(path: &Path, contents: &[u8]) -> io::Result<()> {
        std::fs::write(path, contents)
    }
    pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    pub fn hard_link(original: &Path, link: &Path) -> io::Result<()> {
        std::fs::hard_link(original, link)
    }
    pub fn remove_file(path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    pub fn read_dir(path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let is_dir = entry.file_type()?.is_dir();
            entries.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                path: entry.path(),
                is_dir,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }
    pub fn metadata(path: &Path) -> io::Result<Metadata> {
        let metadata = std::fs::metadata(path)?;
        Ok(Metadata { is_dir: metadata.is_dir(), len: metadata.len() })
    }
    pub fn sync_dir(path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
    pub fn lock(path: &Path) -> io::Result<Lock> {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        file.lock()?;
        Ok(Lock { _file: file })
    }
    pub fn create(path: &Path) -> io::Result<File> {
        Ok(File { inner: std::fs::File::create(path)? })
    }
    pub fn create_new(path: &Path) -> io::Result<File> {
        Ok(File { inner: std::fs::OpenOptions::new().write(true).create_new(true).open(path)? })
    }
    pub fn open(path: &Path) -> io::Result<File> {
        Ok(File { inner: std::fs::File::open(path)? })
    }
}

#[cfg(madsim)]
use sim as imp;

/// Creates a directory and its missing parents (not durable: see [`create_dir_all_durable`]).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    imp::create_dir_all(path)
}

/// Creates a directory and its missing parents, and makes every directory it created durable
/// in its parent.
pub fn create_dir_all_durable(path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(dir) = at.filter(|dir| !dir.as_os_str().is_empty()) {
        if metadata(dir).is_ok() {
            break;
        }
        missing.push(dir);
        at = dir.parent();
    }
    create_dir_all(path)?;
    for dir in missing.iter().rev() {
        sync_dir(parent_of(dir))?;
    }
    Ok(())
}

/// The whole content of a file.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    imp::read(path)
}

/// The whole content of a file as UTF-8.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Creates or truncates a file and writes `contents` (not durable: see [`write_durable`]).
pub fn write(path: &Path, contents: &[u8]) -> io::Result<()> {
    imp::write(path, contents)
}

/// Replaces `path` with `contents` atomically and durably: a temporary file in the same
/// directory is written and synced, renamed over `path`, and the directory is synced. A crash
/// at any point leaves either the old content or the new, never a mix.
pub fn write_durable(path: &Path, contents: &[u8]) -> io::Result<()> {
    let temporary = temporary_sibling(path);
    let result = (|| {
        let mut file = create(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        rename(&temporary, path)?;
        sync_dir(parent_of(path))
    })();
    if result.is_err() {
        let _ = remove_file(&temporary);
    }
    result
}

/// A name for a temporary file next to `path`, unique to this call (`.<name>.<token>.tmp`:
/// hidden, so listings of committed output never see it).
pub fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(String::new, |name| name.to_string_lossy().into_owned());
    parent_of(path).join(format!(".{name}.{:016x}.tmp", crate::rt::attempt_token()))
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Renames a file (replacing `to` if it exists). Durable once `to`'s directory (and `from`'s)
/// is synced.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    imp::rename(from, to)
}

/// Gives the file at `original` a second name `link`; fails with `AlreadyExists` if `link`
/// exists, which makes it an atomic create-if-absent.
pub fn hard_link(original: &Path, link: &Path) -> io::Result<()> {
    imp::hard_link(original, link)
}

/// Removes a file's name.
pub fn remove_file(path: &Path) -> io::Result<()> {
    imp::remove_file(path)
}

/// The entries of a directory, sorted by name.
pub fn read_dir(path: &Path) -> io::Result<Vec<DirEntry>> {
    imp::read_dir(path)
}

/// Whether `path` is a file or a directory, and its length.
pub fn metadata(path: &Path) -> io::Result<Metadata> {
    imp::metadata(path)
}

/// Makes the names in a directory durable (after creating, renaming or removing files in it).
pub fn sync_dir(path: &Path) -> io::Result<()> {
    imp::sync_dir(path)
}

/// Takes an exclusive advisory lock on `path` (created if missing), waiting for it.
pub fn lock(path: &Path) -> io::Result<Lock> {
    imp::lock(path)
}

impl File {
    /// Creates a file for writing, truncating an existing one.
    pub fn create(path: &Path) -> io::Result<File> {
        create(path)
    }

    /// Creates a file for writing; fails with `AlreadyExists` if it exists.
    pub fn create_new(path: &Path) -> io::Result<File> {
        imp::create_new(path)
    }

    /// Opens a file for reading.
    pub fn open(path: &Path) -> io::Result<File> {
        imp::open(path)
    }

    /// Makes the file's content durable.
    pub fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }
}

fn create(path: &Path) -> io::Result<File> {
    imp::create(path)
}

impl Read for File {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for File {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Seek for File {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        self.inner.seek(position)
    }
}

/// The crash model of the simulated file system: a namespace of names pointing at inodes, each
/// name and inode with its durable state beside its current one. Pure data, generic over the
/// node type, so that it is unit-tested outside the simulator.
#[cfg(any(madsim, test))]
#[cfg_attr(not(madsim), allow(dead_code))] // the unit tests use a part
mod model {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io;
    use std::path::{Component, Path, PathBuf};

    use super::{DirEntry, Metadata};
    use crate::keygroup::mix64;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Object {
        File(u64),
        Dir,
    }

    struct Inode<N> {
        data: Vec<u8>,
        durable: Vec<u8>,
        /// The node whose writes are not durable yet.
        dirty_by: Option<N>,
    }

    /// A name: what it is now, what it is on disk, and the unsynced operation (and its node)
    /// that made the difference.
    struct Name<N> {
        current: Option<Object>,
        durable: Option<Object>,
        pending: Option<(u64, N)>,
    }

    pub(super) struct Model<N> {
        random: u64,
        next_inode: u64,
        next_operation: u64,
        /// Kills lose nothing (the model before unsynced writes could be lost).
        pub(super) keep_unsynced: bool,
        inodes: BTreeMap<u64, Inode<N>>,
        names: BTreeMap<PathBuf, Name<N>>,
        /// Nodes crashed and not restarted: they do nothing more.
        dead: Vec<N>,
        /// Counts changes of the namespace (for observers that rescan only after one).
        version: u64,
    }

    /// A lexically normalised absolute form of `path` (`.` and `..` resolved).
    pub(super) fn normal(path: &Path) -> PathBuf {
        let mut out = PathBuf::from("/");
        for component in path.components() {
            match component {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(part) => out.push(part),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        out
    }

    pub(super) fn not_found(path: &Path) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file or directory (simulated)", path.display()))
    }

    impl<N: Copy + Eq> Model<N> {
        pub(super) const EMPTY: Model<N> = Model {
            random: 0,
            next_inode: 0,
            next_operation: 0,
            keep_unsynced: false,
            inodes: BTreeMap::new(),
            names: BTreeMap::new(),
            dead: Vec::new(),
            version: 0,
        };

        /// An empty file system whose crash draws come from `seed`.
        pub(super) fn new(seed: u64, keep_unsynced: bool) -> Self {
            Model { random: mix64(seed ^ 0xF11E_5157), keep_unsynced, ..Self::EMPTY }
        }

        fn draw(&mut self) -> u64 {
            self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
            mix64(self.random)
        }

        pub(super) fn lookup(&self, path: &Path) -> Option<Object> {
            if path == Path::new("/") {
                return Some(Object::Dir);
            }
            self.names.get(path).and_then(|name| name.current)
        }

        pub(super) fn file(&self, path: &Path) -> io::Result<u64> {
            match self.lookup(path) {
                Some(Object::File(inode)) => Ok(inode),
                Some(Object::Dir) => Err(io::Error::new(io::ErrorKind::IsADirectory, path.display().to_string())),
                None => Err(not_found(path)),
            }
        }

        fn parent_exists(&self, path: &Path) -> io::Result<()> {
            match path.parent().map(|parent| self.lookup(parent)) {
                Some(Some(Object::Dir)) | None => Ok(()),
                _ => Err(not_found(path.parent().unwrap_or(path))),
            }
        }

        /// Points `path` at `object`, as part of unsynced operation `operation` of `node`.
        fn set(&mut self, path: &Path, object: Option<Object>, operation: u64, node: N) {
            self.version += 1;
            let name =
                self.names.entry(path.to_path_buf()).or_insert(Name { current: None, durable: None, pending: None });
            name.current = object;
            name.pending = Some((operation, node));
        }

        fn operation(&mut self) -> u64 {
            self.next_operation += 1;
            self.next_operation
        }

        /// Fails if `node` crashed and has not restarted: it does nothing more.
        pub(super) fn alive(&self, node: N) -> io::Result<()> {
            if self.dead.contains(&node) {
                return Err(io::Error::other("the node crashed (simulated): no more file operations"));
            }
            Ok(())
        }

        /// `node` restarted: it may act again.
        pub(super) fn revive(&mut self, node: N) {
            self.dead.retain(|dead| *dead != node);
        }

        pub(super) fn create_dir_all(&mut self, path: &Path, node: N) -> io::Result<()> {
            let mut at = PathBuf::from("/");
            for component in path.components().skip(1) {
                at.push(component);
                match self.lookup(&at) {
                    Some(Object::Dir) => {}
                    Some(Object::File(_)) => {
                        return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is a file", at.display())))
                    }
                    None => {
                        let operation = self.operation();
                        self.set(&at, Some(Object::Dir), operation, node);
                    }
                }
            }
            Ok(())
        }

        /// Creates (or, unless `exclusive`, truncates) the file at `path`; its inode.
        pub(super) fn create(&mut self, path: &Path, exclusive: bool, node: N) -> io::Result<u64> {
            self.parent_exists(path)?;
            match self.lookup(path) {
                Some(Object::File(_)) if exclusive => {
                    Err(io::Error::new(io::ErrorKind::AlreadyExists, path.display().to_string()))
                }
                Some(Object::File(inode)) => {
                    let file = self.inodes.get_mut(&inode).expect("inode of a name");
                    file.data.clear();
                    file.dirty_by = Some(node);
                    Ok(inode)
                }
                Some(Object::Dir) => Err(io::Error::new(io::ErrorKind::IsADirectory, path.display().to_string())),
                None => {
                    self.next_inode += 1;
                    let inode = self.next_inode;
                    self.inodes.insert(inode, Inode { data: Vec::new(), durable: Vec::new(), dirty_by: None });
                    let operation = self.operation();
                    self.set(path, Some(Object::File(inode)), operation, node);
                    Ok(inode)
                }
            }
        }

        pub(super) fn data(&self, inode: u64) -> Option<&[u8]> {
            self.inodes.get(&inode).map(|inode| inode.data.as_slice())
        }

        pub(super) fn write(&mut self, inode: u64, position: usize, buf: &[u8], node: N) -> bool {
            let Some(inode) = self.inodes.get_mut(&inode) else { return false };
            if inode.data.len() < position {
                inode.data.resize(position, 0);
            }
            let overlap = buf.len().min(inode.data.len() - position);
            inode.data[position..position + overlap].copy_from_slice(&buf[..overlap]);
            inode.data.extend_from_slice(&buf[overlap..]);
            inode.dirty_by = Some(node);
            true
        }

        pub(super) fn sync_file(&mut self, inode: u64) -> bool {
            let Some(inode) = self.inodes.get_mut(&inode) else { return false };
            inode.durable = inode.data.clone();
            inode.dirty_by = None;
            true
        }

        pub(super) fn rename(&mut self, from: &Path, to: &Path, node: N) -> io::Result<()> {
            let inode = self.file(from)?;
            self.parent_exists(to)?;
            if self.lookup(to) == Some(Object::Dir) {
                return Err(io::Error::new(io::ErrorKind::IsADirectory, to.display().to_string()));
            }
            if from == to {
                return Ok(());
            }
            let operation = self.operation();
            self.set(from, None, operation, node);
            self.set(to, Some(Object::File(inode)), operation, node);
            Ok(())
        }

        pub(super) fn hard_link(&mut self, original: &Path, link: &Path, node: N) -> io::Result<()> {
            let inode = self.file(original)?;
            self.parent_exists(link)?;
            if self.lookup(link).is_some() {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, link.display().to_string()));
            }
            let operation = self.operation();
            self.set(link, Some(Object::File(inode)), operation, node);
            Ok(())
        }

        pub(super) fn remove_file(&mut self, path: &Path, node: N) -> io::Result<()> {
            self.file(path)?;
            let operation = self.operation();
            self.set(path, None, operation, node);
            Ok(())
        }

        pub(super) fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
            match self.lookup(path) {
                Some(Object::Dir) => {}
                Some(Object::File(_)) => {
                    return Err(io::Error::new(io::ErrorKind::NotADirectory, path.display().to_string()))
                }
                None => return Err(not_found(path)),
            }
            let mut entries = Vec::new();
            for (name, entry) in self.names.range(path.to_path_buf()..) {
                if !name.starts_with(path) {
                    break;
                }
                if name.parent() != Some(path) {
                    continue;
                }
                if let Some(object) = entry.current {
                    entries.push(DirEntry {
                        name: name.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                        path: name.clone(),
                        is_dir: object == Object::Dir,
                    });
                }
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        }

        pub(super) fn metadata(&self, path: &Path) -> io::Result<Metadata> {
            match self.lookup(path) {
                Some(Object::Dir) => Ok(Metadata { is_dir: true, len: 0 }),
                Some(Object::File(inode)) => Ok(Metadata { is_dir: false, len: self.inodes[&inode].data.len() as u64 }),
                None => Err(not_found(path)),
            }
        }

        /// Makes the directory's names durable — and every operation that changed one of them
        /// whole (a rename synced in its target directory is durable in its source too).
        pub(super) fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
            if self.lookup(path) != Some(Object::Dir) {
                return Err(not_found(path));
            }
            let operations: BTreeSet<u64> = self
                .names
                .range(path.to_path_buf()..)
                .take_while(|(name, _)| name.starts_with(path))
                .filter(|(name, _)| name.parent() == Some(path))
                .filter_map(|(_, name)| name.pending.map(|(operation, _)| operation))
                .collect();
            if operations.is_empty() {
                return Ok(());
            }
            self.version += 1;
            for name in self.names.values_mut() {
                if name.pending.is_some_and(|(operation, _)| operations.contains(&operation)) {
                    name.durable = name.current;
                    name.pending = None;
                }
            }
            self.names.retain(|_, name| name.current.is_some() || name.durable.is_some() || name.pending.is_some());
            Ok(())
        }

        /// The files directly in `dir` whose names are durable, with their durable inodes
        /// (names starting with `.` or `_` left out).
        pub(super) fn durable_children(&self, dir: &Path) -> Vec<(PathBuf, u64)> {
            self.names
                .range(dir.to_path_buf()..)
                .take_while(|(name, _)| name.starts_with(dir))
                .filter(|(name, _)| name.parent() == Some(dir))
                .filter(|(name, _)| !name.file_name().is_some_and(|n| n.to_string_lossy().starts_with(['.', '_'])))
                .filter_map(|(name, entry)| match entry.durable {
                    Some(Object::File(inode)) => Some((name.clone(), inode)),
                    _ => None,
                })
                .collect()
        }

        /// `node` crashed: each of its unsynced operations is kept or undone (one draw each),
        /// and each file it wrote keeps its durable content and a drawn part of the rest.
        /// A number that changes whenever a name is created, changed, removed or made durable.
        pub(super) fn version(&self) -> u64 {
            self.version
        }

        pub(super) fn crash(&mut self, node: N) {
            self.version += 1;
            if !self.dead.contains(&node) {
                self.dead.push(node);
            }
            if self.keep_unsynced {
                return;
            }
            let operations: BTreeSet<u64> = self
                .names
                .values()
                .filter_map(|name| name.pending.filter(|(_, by)| *by == node).map(|(operation, _)| operation))
                .collect();
            let mut kept = BTreeSet::new();
            for operation in operations {
                if self.draw().is_multiple_of(2) {
                    kept.insert(operation);
                }
            }
            for name in self.names.values_mut() {
                if let Some((operation, by)) = name.pending {
                    if by == node {
                        if kept.contains(&operation) {
                            name.durable = name.current;
                        } else {
                            name.current = name.durable;
                        }
                        name.pending = None;
                    }
                }
            }
            // A directory that is gone takes everything below it (paths sort parents first, so
            // one pass sees a parent's fate before its children's).
            let paths: Vec<PathBuf> = self.names.keys().cloned().collect();
            for path in paths {
                let orphan = path.parent().is_some_and(|parent| self.lookup(parent) != Some(Object::Dir));
                if orphan {
                    let name = self.names.get_mut(&path).expect("listed");
                    (name.current, name.durable, name.pending) = (None, None, None);
                }
            }
            self.names.retain(|_, name| name.current.is_some() || name.durable.is_some() || name.pending.is_some());
            let dirty: Vec<u64> =
                self.inodes.iter().filter(|(_, inode)| inode.dirty_by == Some(node)).map(|(id, _)| *id).collect();
            for id in dirty {
                let (draw, coin) = (self.draw(), self.draw().is_multiple_of(2));
                let inode = self.inodes.get_mut(&id).expect("listed");
                let common = inode.durable.iter().zip(&inode.data).take_while(|(a, b)| a == b).count();
                if common == inode.durable.len() {
                    // Appended since the last sync: a prefix of the appended bytes made it.
                    let keep = common + (draw % (inode.data.len() - common + 1) as u64) as usize;
                    inode.data.truncate(keep);
                } else if coin {
                    // Rewritten since the last sync: the old content survives…
                    inode.data = inode.durable.clone();
                } else {
                    // …or a prefix of the new one.
                    let keep = (draw % (inode.data.len() + 1) as u64) as usize;
                    inode.data.truncate(keep);
                }
                inode.durable = inode.data.clone();
                inode.dirty_by = None;
            }
        }
    }
}

/// The simulated file system (under `--cfg madsim` only): one per simulated run, shared by
/// every node, with the crash model described in the module docs.
#[cfg(madsim)]
pub mod sim {
    use std::io::{self, SeekFrom};
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, MutexGuard};

    use tokio::madsim::task::NodeId;

    use super::model::{normal, not_found, Model};
    use super::{DirEntry, File, Lock, Metadata};

    fn state() -> MutexGuard<'static, Model<NodeId>> {
        static STATE: Mutex<Model<NodeId>> = Mutex::new(Model::EMPTY);
        STATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn this_node() -> NodeId {
        tokio::madsim::plugin::node()
    }

    /// Starts a fresh, empty file system for a simulated run; crash draws come from `seed`.
    /// With `keep_unsynced`, kills lose nothing (the model before writes could be lost).
    pub fn reset(seed: u64, keep_unsynced: bool) {
        *state() = Model::new(seed, keep_unsynced);
    }

    /// `node` crashed: what it wrote and did not make durable is lost or torn, and it does
    /// nothing more until [`revive`].
    pub fn crash(node: NodeId) {
        state().crash(node)
    }

    /// A number that changes whenever a file or directory is created, renamed or removed, a
    /// directory is synced, or a crash undoes a change: observers need to look again only when it
    /// has changed.
    pub fn namespace_version() -> u64 {
        state().version()
    }

    /// `node` restarted.
    pub fn revive(node: NodeId) {
        state().revive(node)
    }

    /// The file system, for the calling node (an error if it crashed).
    fn for_this_node() -> io::Result<(MutexGuard<'static, Model<NodeId>>, NodeId)> {
        let node = this_node();
        let fs = state();
        fs.alive(node)?;
        Ok((fs, node))
    }

    /// The file system, for an operation of the calling node that changes something — unless an
    /// aimed crash hits the node right here ([`crate::faultpoint::arm_file_op_kill`]).
    fn to_change() -> io::Result<(MutexGuard<'static, Model<NodeId>>, NodeId)> {
        if crate::faultpoint::crash_at_file_op(this_node()) {
            return Err(io::Error::other("the node crashed (simulated) at this file operation"));
        }
        for_this_node()
    }

    /// The committed-looking files of `dir` as they are on disk — names durable in the
    /// directory, pointing at the file they point at — each with its identity: what a reader
    /// could rely on after any crash. (Names starting with `.` or `_` are left out.)
    pub fn durable_files(dir: &Path) -> Vec<(PathBuf, u64)> {
        state().durable_children(&normal(dir))
    }

    /// An open simulated file: its inode and position.
    #[derive(Debug)]
    pub struct OpenFile {
        inode: u64,
        position: u64,
        path: PathBuf,
    }

    impl OpenFile {
        pub(super) fn sync_all(&self) -> io::Result<()> {
            to_change()?.0.sync_file(self.inode).then_some(()).ok_or_else(|| not_found(&self.path))
        }
        pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let (fs, _) = for_this_node()?;
            let data = fs.data(self.inode).ok_or_else(|| not_found(&self.path))?;
            let start = (self.position as usize).min(data.len());
            let count = buf.len().min(data.len() - start);
            buf[..count].copy_from_slice(&data[start..start + count]);
            self.position += count as u64;
            Ok(count)
        }
        pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (mut fs, node) = to_change()?;
            if !fs.write(self.inode, self.position as usize, buf, node) {
                return Err(not_found(&self.path));
            }
            self.position += buf.len() as u64;
            Ok(buf.len())
        }
        pub(super) fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        pub(super) fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
            let len = state().data(self.inode).map_or(0, |data| data.len() as u64);
            let target = match position {
                SeekFrom::Start(at) => Some(at),
                SeekFrom::End(delta) => len.checked_add_signed(delta),
                SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
            };
            self.position = target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
            Ok(self.position)
        }
    }

    pub(super) fn create_dir_all(path: &Path) -> io::Result<()> {
        let (mut fs, node) = to_change()?;
        fs.create_dir_all(&normal(path), node)
    }
    pub(super) fn read(path: &Path) -> io::Result<Vec<u8>> {
        let (fs, _) = for_this_node()?;
        let inode = fs.file(&normal(path))?;
        Ok(fs.data(inode).expect("inode of a name").to_vec())
    }
    pub(super) fn write(path: &Path, contents: &[u8]) -> io::Result<()> {
        let mut file = create(path)?;
        std::io::Write::write_all(&mut file, contents)
    }
    pub(super) fn rename(from: &Path, to: &Path) -> io::Result<()> {
        let (mut fs, node) = to_change()?;
        fs.rename(&normal(from), &normal(to), node)
    }
    pub(super) fn hard_link(original: &Path, link: &Path) -> io::Result<()> {
        let (mut fs, node) = to_change()?;
        fs.hard_link(&normal(original), &normal(link), node)
    }
    pub(super) fn remove_file(path: &Path) -> io::Result<()> {
        let (mut fs, node) = to_change()?;
        fs.remove_file(&normal(path), node)
    }
    pub(super) fn read_dir(path: &Path) -> io::Result<Vec<DirEntry>> {
        for_this_node()?.0.read_dir(&normal(path))
    }
    pub(super) fn metadata(path: &Path) -> io::Result<Metadata> {
        for_this_node()?.0.metadata(&normal(path))
    }
    pub(super) fn sync_dir(path: &Path) -> io::Result<()> {
        to_change()?.0.sync_dir(&normal(path))
    }
    pub(super) fn lock(path: &Path) -> io::Result<Lock> {
        // A simulated run is one thread and nothing awaits while holding a lock: mutual
        // exclusion is given. The lock file exists, as in production.
        let path = normal(path);
        if for_this_node()?.0.lookup(&path).is_none() {
            create(&path)?;
        }
        Ok(Lock {})
    }
    pub(super) fn create(path: &Path) -> io::Result<File> {
        let path = normal(path);
        let (mut fs, node) = to_change()?;
        let inode = fs.create(&path, false, node)?;
        Ok(File { inner: OpenFile { inode, position: 0, path } })
    }
    pub(super) fn create_new(path: &Path) -> io::Result<File> {
        let path = normal(path);
        let (mut fs, node) = to_change()?;
        let inode = fs.create(&path, true, node)?;
        Ok(File { inner: OpenFile { inode, position: 0, path } })
    }
    pub(super) fn open(path: &Path) -> io::Result<File> {
        let path = normal(path);
        let inode = for_this_node()?.0.file(&path)?;
        Ok(File { inner: OpenFile { inode, position: 0, path } })
    }
}

#[cfg(test)]
mod tests {
    use super::model::{Model, Object};
    use std::path::Path;

    const A: u64 = 1;
    const B: u64 = 2;

    fn file_system(seed: u64) -> Model<u64> {
        let mut model = Model::new(seed, false);
        model.create_dir_all(Path::new("/d"), A).unwrap();
        model.sync_dir(Path::new("/")).unwrap();
        model
    }

    fn content(model: &Model<u64>, path: &str) -> Option<Vec<u8>> {
        match model.lookup(Path::new(path)) {
            Some(Object::File(inode)) => model.data(inode).map(<[u8]>::to_vec),
            _ => None,
        }
    }

    #[test]
    fn synced_data_and_names_survive_a_crash_and_unsynced_ones_may_not() {
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mut model = file_system(seed);
            let durable = model.create(Path::new("/d/durable"), false, A).unwrap();
            model.write(durable, 0, b"kept", A);
            model.sync_file(durable);
            model.sync_dir(Path::new("/d")).unwrap();
            model.write(durable, 4, b"+tail", A);
            let fresh = model.create(Path::new("/d/fresh"), false, A).unwrap();
            model.write(fresh, 0, b"maybe", A);
            model.sync_file(fresh); // its data, not its name
            let other = model.create(Path::new("/d/other"), false, B).unwrap();
            model.write(other, 0, b"other node", B);
            model.crash(A);
            let kept = content(&model, "/d/durable").expect("a synced name survives");
            assert!(kept.starts_with(b"kept") && b"kept+tail".starts_with(&kept), "torn at a prefix: {kept:?}");
            let fresh = content(&model, "/d/fresh");
            assert!(fresh.is_none() || fresh.as_deref() == Some(b"maybe".as_slice()));
            assert_eq!(content(&model, "/d/other").as_deref(), Some(b"other node".as_slice()), "B did not crash");
            outcomes.insert((kept.len(), fresh.is_some()));
        }
        assert!(outcomes.len() > 3, "crashes draw different outcomes: {outcomes:?}");
    }

    #[test]
    fn a_rename_is_atomic_and_durable_once_either_directory_is_synced() {
        for seed in 0..32 {
            let mut model = file_system(seed);
            model.create_dir_all(Path::new("/e"), A).unwrap();
            model.sync_dir(Path::new("/")).unwrap();
            let inode = model.create(Path::new("/d/staged"), false, A).unwrap();
            model.write(inode, 0, b"x", A);
            model.sync_file(inode);
            model.sync_dir(Path::new("/d")).unwrap();
            model.rename(Path::new("/d/staged"), Path::new("/e/part"), A).unwrap();
            // Unsynced: either both halves of the rename or neither.
            model.crash(A);
            let (from, to) = (content(&model, "/d/staged"), content(&model, "/e/part"));
            assert!(from.is_some() != to.is_some(), "a rename moves the name, whole: {from:?} {to:?}");
        }
        let mut model = file_system(7);
        model.create_dir_all(Path::new("/e"), A).unwrap();
        model.sync_dir(Path::new("/")).unwrap();
        let inode = model.create(Path::new("/d/staged"), false, A).unwrap();
        model.sync_file(inode);
        model.sync_dir(Path::new("/d")).unwrap();
        model.rename(Path::new("/d/staged"), Path::new("/e/part"), A).unwrap();
        model.sync_dir(Path::new("/e")).unwrap();
        model.crash(A);
        assert!(content(&model, "/e/part").is_some() && content(&model, "/d/staged").is_none());
    }

    #[test]
    fn a_directory_never_synced_into_its_parent_may_take_its_files_along() {
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..32 {
            let mut model = file_system(seed);
            model.create_dir_all(Path::new("/d/new/deeper"), A).unwrap();
            let inode = model.create(Path::new("/d/new/deeper/f"), false, A).unwrap();
            model.write(inode, 0, b"x", A);
            model.sync_file(inode);
            model.sync_dir(Path::new("/d/new/deeper")).unwrap(); // the file's name, not the directories'
            model.crash(A);
            let kept = content(&model, "/d/new/deeper/f").is_some();
            assert_eq!(
                kept,
                model.lookup(Path::new("/d/new/deeper")).is_some(),
                "a file lives only in a live directory"
            );
            outcomes.insert(kept);
        }
        assert_eq!(outcomes.len(), 2, "sometimes the directory survives, sometimes not");
        let mut model = file_system(3);
        model.create_dir_all(Path::new("/d/new"), A).unwrap();
        model.sync_dir(Path::new("/d")).unwrap();
        let inode = model.create(Path::new("/d/new/f"), false, A).unwrap();
        model.sync_file(inode);
        model.sync_dir(Path::new("/d/new")).unwrap();
        model.crash(A);
        assert!(content(&model, "/d/new/f").is_some(), "synced all the way up: durable");
    }

    #[test]
    fn a_crashed_node_does_nothing_more_until_it_restarts() {
        let mut model = file_system(1);
        model.crash(A);
        assert!(model.alive(A).is_err());
        assert!(model.alive(B).is_ok());
        model.revive(A);
        assert!(model.alive(A).is_ok());
    }

    #[test]
    fn the_lossless_model_keeps_everything() {
        let mut model = Model::new(1, true);
        model.create_dir_all(Path::new("/d"), A).unwrap();
        let inode = model.create(Path::new("/d/f"), false, A).unwrap();
        model.write(inode, 0, b"all", A);
        model.crash(A);
        assert_eq!(content(&model, "/d/f").as_deref(), Some(b"all".as_slice()));
    }
}
