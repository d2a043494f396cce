//! Repository tidiness, checked as ordinary tests: ARCHITECTURE.md names
//! exactly the crates that exist, and every Rust file says what it is for.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn architecture_names_exactly_the_crates() {
    let architecture = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut crates: Vec<String> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    crates.push("xtask".into());
    for name in &crates {
        let heading = if name == "xtask" { "### `xtask`".to_string() } else { format!("### `crates/{name}`") };
        assert!(architecture.contains(&heading), "ARCHITECTURE.md has no section {heading}");
    }
    for line in architecture.lines().filter(|l| l.starts_with("### `crates/")) {
        let name = line.trim_start_matches("### `crates/").trim_end_matches('`');
        assert!(crates.iter().any(|c| c == name), "ARCHITECTURE.md describes crates/{name}, which does not exist");
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() && name != "target" && !name.starts_with('.') && name != "test_data" && name != "vendor" {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_doc_comment() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    rust_files(&root().join("xtask"), &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap_or_default().trim_start().starts_with("//!"))
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a leading //! comment: {missing:?}");
}

#[test]
fn no_stubs_or_ignored_tests() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    rust_files(&root().join("xtask"), &mut files);
    let forbidden = [concat!("todo", "!("), concat!("unimplemented", "!("), concat!("#[", "ignore")];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for word in forbidden {
            assert!(!text.contains(word), "{} contains {word}", file.display());
        }
    }
}
