//! `ferro rm NAME`: delete a model from the store.

use anyhow::Result;

use crate::store::Store;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the stored model (as `ferro list` shows it).
    pub name: String,
}

pub fn run(args: Args) -> Result<()> {
    let store = Store::from_env()?;
    let path = store.remove(&args.name)?;
    println!("removed {}", path.display());
    Ok(())
}
