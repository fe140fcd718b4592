//! Replaying a fuzz corpus as an ordinary test, so a regression fails CI without nightly.

use std::path::Path;

/// Runs `run` on every input of `fuzz/corpus/<target>/` of the workspace, which must exist
/// and hold at least one input; returns how many there were.
pub fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "the corpus of {target} is empty");
    n
}
