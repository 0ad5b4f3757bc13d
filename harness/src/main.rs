//! The `harness` command line: runs tests, re-checks stored runs, cleans up leftovers.
fn main() {
    println!("harness: not built yet");
}
