//! Every file and folder prepatch writes: reports, the journal, the
//! restore, rollback and cleanup records. They say which servers exist,
//! what they are called and what was done to them, so they are the
//! owner's alone (folders 0700, files 0600) whatever the umask, unless the
//! config shares them with the group (`reports.group_readable`: 0750 and
//! 0640). Folders and files that exist already keep their modes.
//!
//! A file is written whole or not at all: into a temporary file made
//! exclusively in the target's folder (a random name, `O_EXCL`, so no
//! symlink is followed and no file of anyone else's is truncated), then
//! renamed over the target.
//!
//! Who may read them is a setting of the process, as the umask is: set
//! once from the config ([`share_with_group`]) before anything is written.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

static GROUP_READABLE: AtomicBool = AtomicBool::new(false);

/// Lets the group read what is written from now on (`true`), or only the
/// owner (`false`, the default).
pub fn share_with_group(yes: bool) {
    GROUP_READABLE.store(yes, Ordering::Relaxed);
}

/// The mode of a new folder.
pub fn dir_mode() -> u32 {
    if GROUP_READABLE.load(Ordering::Relaxed) {
        0o750
    } else {
        0o700
    }
}

/// The mode of a new file.
pub fn file_mode() -> u32 {
    if GROUP_READABLE.load(Ordering::Relaxed) {
        0o640
    } else {
        0o600
    }
}

/// Makes `dir` and any missing parents, each new one with [`dir_mode`].
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, dir_mode());
    builder.create(dir)
}

/// Creates the file `path` empty with [`file_mode`] when it does not
/// exist, without following a symlink there; an existing file is left as
/// it is. For files another library opens by name (the journal, which
/// SQLite opens and whose `-wal` and `-shm` files it creates with the
/// database's own mode).
pub fn create_private(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, file_mode());
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The buffered file a report is written into. A concrete type, not
/// `dyn Write`: the writers make millions of small writes, and each one
/// is then an inlined copy into the buffer rather than a virtual call.
pub type FileWriter = io::BufWriter<tempfile::NamedTempFile>;

/// Writes `path` whole or not at all: `write` fills a temporary file made
/// exclusively beside it, which is flushed (to the disk too when `sync`)
/// and renamed over `path`. On an error the temporary file is removed and
/// the earlier file, if any, is left as it was.
pub fn replace(
    path: &Path,
    sync: bool,
    write: impl FnOnce(&mut FileWriter) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(file_mode()));
    // Dropped on an error before the rename: the temporary file goes.
    let tmp = builder.tempfile_in(dir)?;
    let mut file = io::BufWriter::with_capacity(256 * 1024, tmp);
    write(&mut file)?;
    file.flush()?;
    let tmp = file.into_inner().map_err(|e| e.into_error())?;
    if sync {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn files_and_folders_are_the_owners_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let reports = dir.path().join("reports/run-1");
        create_dir(&reports).expect("mkdir");
        assert_eq!(mode(&reports), 0o700);
        assert_eq!(mode(&dir.path().join("reports")), 0o700);
        let file = reports.join("inventory.csv");
        replace(&file, false, |w| w.write_all(b"a,b\n")).expect("write");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).expect("read"), b"a,b\n");
        let db = reports.join("prepatch.db");
        create_private(&db).expect("create");
        assert_eq!(mode(&db), 0o600);
        // Nothing left beside the file.
        let names: Vec<_> = std::fs::read_dir(&reports)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_symlink_at_the_temporary_name_is_not_followed() {
        // The old fixed name `<name>.tmp`, planted as a symlink to a file
        // of someone else's: neither is touched.
        let dir = tempfile::tempdir().expect("tmp");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").expect("write");
        let target = dir.path().join("report.json");
        std::os::unix::fs::symlink(&victim, dir.path().join("report.json.tmp")).expect("ln");
        replace(&target, false, |w| w.write_all(b"{}")).expect("write");
        assert_eq!(std::fs::read(&victim).expect("read"), b"keep");
        assert_eq!(std::fs::read(&target).expect("read"), b"{}");
        // A symlink where the journal goes is not followed either.
        let db = dir.path().join("prepatch.db");
        std::os::unix::fs::symlink(&victim, &db).expect("ln");
        create_private(&db).expect("exists: left as it is");
        assert_eq!(std::fs::read(&victim).expect("read"), b"keep");
    }

    #[test]
    fn a_failed_write_leaves_the_earlier_file_and_no_temporary_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let target = dir.path().join("report.json");
        std::fs::write(&target, b"earlier").expect("write");
        let err = replace(&target, true, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(std::fs::read(&target).expect("read"), b"earlier");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
