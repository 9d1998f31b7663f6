//! Print a GGUF file's metadata and tensor table: `cargo run -p ferro-gguf --example dump FILE`.
fn main() {
    let path = std::env::args().nth(1).expect("usage: dump FILE");
    let g = match ferro_gguf::Gguf::open(&path) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "version {} alignment {} data at {}",
        g.version, g.alignment, g.data_offset
    );
    for (k, v) in g.metadata() {
        match v {
            ferro_gguf::Value::Array(a) => {
                println!("{k}: array<{}>[{}]", a.elem_type.name(), a.len)
            }
            ferro_gguf::Value::String(s) => {
                println!("{k}: {:?}", String::from_utf8_lossy(&s[..s.len().min(80)]))
            }
            v => println!("{k}: {v:?}"),
        }
    }
    for t in g.tensors() {
        println!("{} {:?} {} @{} {}", t.name, t.dims, t.ty, t.offset, t.n_bytes);
    }
}
