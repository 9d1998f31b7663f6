//! `ferro pull NAME|URL [--sha256 HEX]`: fetch a model into the store.

use anyhow::{bail, Result};

use crate::store::{self, Store};

#[derive(clap::Args)]
pub struct Args {
    /// A known model name (see `ferro list`) or an http(s) URL of a .gguf file.
    pub model: String,
    /// Expected sha256 of the file (hex); the download is rejected when it differs.
    #[arg(long)]
    pub sha256: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let store = Store::from_env()?;
    let path = if args.model.starts_with("http://") || args.model.starts_with("https://") {
        store.pull_url(&args.model, args.sha256.as_deref())?
    } else if let Some(k) = store::known(&args.model) {
        store.pull_known(k, args.sha256.as_deref())?
    } else {
        let names: Vec<&str> = store::KNOWN.iter().map(|k| k.name).collect();
        bail!(
            "unknown model name '{}' (known names: {}; or give an http(s) URL of a .gguf file)",
            args.model,
            names.join(", ")
        );
    };
    println!("{}", path.display());
    Ok(())
}
