"""Published numbers shown beside ours for reference (never mixed with our measurements).

wanda-llama7b: WikiText-2 perplexity of LLaMA-7B, 128 x 2048 C4 calibration samples
(Sun et al., "A Simple and Effective Pruning Approach for Large Language Models", ICLR 2024,
Tables 2 and 3). Keys: (method, pattern) with pattern "0.5", "4:8", "2:4" or "" for dense.
"""

REFERENCES = {
    "wanda-llama7b": {
        "label": "LLaMA-7B ppl (Wanda paper)",
        "values": {
            ("dense", ""): 5.68,
            ("magnitude", "0.5"): 17.29,
            ("sparsegpt", "0.5"): 7.22,
            ("wanda", "0.5"): 7.26,
            ("magnitude", "4:8"): 16.84,
            ("sparsegpt", "4:8"): 8.61,
            ("wanda", "4:8"): 8.57,
            ("magnitude", "2:4"): 42.13,
            ("sparsegpt", "2:4"): 11.00,
            ("wanda", "2:4"): 11.53,
        },
    }
}
