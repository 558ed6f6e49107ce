//! The `sluice` binary: parse the command line, run it, exit with its code.

fn main() {
    // One rustls crypto provider for the whole process (aws-lc-rs), before
    // anything asks rustls for its default: with the `oracle` feature a
    // second one (ring) is linked, and rustls then refuses to guess.
    sluice::warehouse::tls::install_provider();
    std::process::exit(sluice::cli::main());
}
