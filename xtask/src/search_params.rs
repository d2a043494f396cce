//! Generation of the SearchParameter table.

use std::path::Path;

pub(crate) fn generate(root: &Path) -> anyhow::Result<()> {
    let _ = root;
    Ok(())
}
