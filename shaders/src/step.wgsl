// Per-submission state shared by every dispatch of a batch (bind group 1). Token t of the batch
// sits at position tok_pos(t) of its sequence, whose KV cache rows start at row tok_row0(t)
// (slot * n_ctx): one sequence's positions pos0, pos0 + 1, ... (prefill) or the next token of
// several sequences, each in its own slot (batched decode). The head of a step (the logits of
// the rows it returns) runs under a second Step whose n_tok is the number of rows.
struct Step {
    n_tok: u32, // tokens in this batch
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    // Token 2i's (position, first cache row) in .xy, token 2i + 1's in .zw (MAX_STEP_TOKENS
    // tokens; uniform arrays take 16-byte elements).
    at: array<vec4<u32>, 256>,
}

@group(1) @binding(0) var<uniform> batch: Step;

fn tok_pos(t: u32) -> u32 {
    let a = batch.at[t >> 1u];
    return select(a.x, a.z, (t & 1u) == 1u);
}

fn tok_row0(t: u32) -> u32 {
    let a = batch.at[t >> 1u];
    return select(a.y, a.w, (t & 1u) == 1u);
}
