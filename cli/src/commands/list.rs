//! `ferro list`: the models in the store, and the known names that can be pulled.

use anyhow::Result;

use crate::store::{self, Store};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    let store = Store::from_env()?;
    let models = store.list()?;
    if models.is_empty() {
        println!("no models in {}", store.models_dir().display());
    } else {
        let width = models.iter().map(|m| m.name.len()).max().unwrap_or(0).max(4);
        println!("{:width$}  {:>10}  PATH", "NAME", "SIZE");
        for m in &models {
            let default = if m.name == store::DEFAULT_MODEL {
                " (default)"
            } else {
                ""
            };
            println!(
                "{:width$}  {:>10}  {}{default}",
                m.name,
                human_bytes(m.bytes),
                m.path.display()
            );
        }
    }
    let missing: Vec<&store::KnownModel> = store::KNOWN
        .iter()
        .filter(|k| !models.iter().any(|m| m.name == k.name))
        .collect();
    if !missing.is_empty() {
        println!();
        println!("available with `ferro pull NAME`:");
        for k in missing {
            println!("  {}  {}", k.name, k.description);
        }
    }
    Ok(())
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
