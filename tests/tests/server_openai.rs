//! `ferro serve` with the official `openai` Python client (installed into a venv under target/).

mod server_common;

use server_common::{run_scenarios, Server};

fn scenario(names: &[&str]) {
    let Some(s) = Server::start(&["--parallel", "2"]) else {
        return;
    };
    run_scenarios(&s, names);
}

#[test]
fn models_and_chat() {
    scenario(&["models", "chat"]);
}

#[test]
fn streaming_chat() {
    scenario(&["stream"]);
}

#[test]
fn text_completions() {
    scenario(&["completions"]);
}

#[test]
fn embeddings() {
    scenario(&["embeddings"]);
}

#[test]
fn json_mode() {
    scenario(&["json_mode"]);
}

#[test]
fn tool_call() {
    scenario(&["tool_call"]);
}

#[test]
fn stop_sequences() {
    scenario(&["stop"]);
}

#[test]
fn logprobs() {
    scenario(&["logprobs"]);
}
