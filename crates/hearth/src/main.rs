//! The `hearth` binary: parses the command line and runs a subcommand.

fn main() {
    println!("hearth");
}
