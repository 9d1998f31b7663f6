// Per-submission state shared by every dispatch of a batch (bind group 1).
struct Step {
    n_tok: u32, // tokens in this batch
    pos0: u32,  // position of the first token in the sequence
    _pad0: u32,
    _pad1: u32,
}

@group(1) @binding(0) var<uniform> batch: Step;
