//! `cargo xtask codegen`: regenerates the FHIR R4 definitions under
//! crates/fhir/definitions from the vendored core package. Never touches the network.

use std::path::PathBuf;

mod compartments;
mod search_params;
mod structures;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match args.first().map(String::as_str) {
        Some("codegen") => {
            structures::generate(&root)?;
            search_params::generate(&root)?;
            compartments::generate(&root)?;
            Ok(())
        }
        _ => {
            eprintln!("usage: cargo xtask codegen");
            std::process::exit(2);
        }
    }
}
