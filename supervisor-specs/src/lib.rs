//! Declarative supervision trees of processes, as TOML or a Rust builder (filled by the supervision work).
