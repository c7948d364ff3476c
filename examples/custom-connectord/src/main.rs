//! connectord with the `airq` connector beside the built-in ones.

#[global_allocator]
static ALLOCATOR: connectord::Allocator = connectord::Allocator;

fn main() -> std::process::ExitCode {
    connectord::Daemon::new()
        .connector(airq_connector::Airq::default())
        .run_from_args()
}
