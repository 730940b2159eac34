//! The `socketeer` program (the code is in the crate's library, `src/lib.rs`).

fn main() {
    socketeer_cli::main()
}
