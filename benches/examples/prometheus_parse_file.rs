//! The peer of `connectord parse --count` for the whole-process benchmark: reads a
//! file and parses it with the `prometheus-parse` crate, printing the sample count.
//!
//! `cargo run --release -p benches --example prometheus_parse_file -- FILE`

use std::io::BufRead as _;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: prometheus_parse_file FILE");
        std::process::exit(2);
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("cannot open {path}: {e}");
            std::process::exit(2);
        }
    };
    // The crate takes lines; a buffered reader is how its README feeds a file.
    let lines = std::io::BufReader::with_capacity(1 << 20, file).lines();
    match prometheus_parse::Scrape::parse(lines) {
        Ok(scrape) => println!("samples={}", scrape.samples.len()),
        Err(e) => {
            eprintln!("prometheus-parse failed: {e}");
            std::process::exit(1);
        }
    }
}
