//! Q8_K: placeholder, filled by the K-quant work (branch kquants).
