//! `connectord` with the connectors this repository ships.

#[global_allocator]
static ALLOCATOR: connectord::Allocator = connectord::Allocator;

fn main() -> std::process::ExitCode {
    connectord::Daemon::new().run_from_args()
}
