//! `cargo run -p ferro-gguf --example metadata_only SRC OUT`: writes a GGUF with every metadata
//! key of SRC and no tensors (a tokenizer source for `ferro gen-model` that weighs a few MiB).

use ferro_gguf::{Gguf, GgufWriter, MetaValue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, out] = args.as_slice() else {
        return Err("usage: metadata_only SRC.gguf OUT.gguf".into());
    };
    let g = Gguf::open(src)?;
    let mut w = GgufWriter::new();
    for (k, v) in g.metadata() {
        if k != "general.alignment" {
            w.set(k, MetaValue::from_value(v))?;
        }
    }
    w.write_file(out)?;
    Ok(())
}
