//! Scratch directories for the crate's tests.

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A directory for one test under the system's temporary directory, named
/// by the test and the process (two runs at once never share one), created
/// empty and removed when dropped, so a test run leaves nothing behind (a
/// failing test drops it too, while unwinding).
#[derive(Debug)]
pub(crate) struct TestDir(PathBuf);

impl TestDir {
    /// `accessd-{kind}-{name}-{pid}`, emptied and created.
    pub(crate) fn new(kind: &str, name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("accessd-{kind}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create the test directory {}: {e}", dir.display());
        }
        Self(dir)
    }
}

impl Deref for TestDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl From<&TestDir> for PathBuf {
    fn from(dir: &TestDir) -> Self {
        dir.0.clone()
    }
}
