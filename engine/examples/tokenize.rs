//! Tokenize text with a model's tokenizer: `cargo run -p ferro-engine --example tokenize MODEL TEXT [--no-special]`.
//! Prints the ids as a JSON array (what `ferro tokenize` prints) and the load/encode times on stderr.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let no_special = args.iter().any(|a| a == "--no-special");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [model, text] = pos[..] else {
        eprintln!("usage: tokenize MODEL TEXT [--no-special]");
        std::process::exit(2);
    };
    let g = match ferro_gguf::Gguf::open(model) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let t0 = std::time::Instant::now();
    let tok = match ferro_engine::tokenizer::Tokenizer::from_gguf(&g) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let t1 = std::time::Instant::now();
    let ids = tok.encode(text, !no_special, !no_special);
    let t2 = std::time::Instant::now();
    println!("{}", serde_json::to_string(&ids).expect("ids serialize"));
    eprintln!("load {:?}, encode {:?}", t1 - t0, t2 - t1);
}
