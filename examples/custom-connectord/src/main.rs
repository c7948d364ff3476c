//! connectord with the `airq` connector beside the built-in ones.

fn main() -> std::process::ExitCode {
    connectord::Daemon::new()
        .connector(airq_connector::Airq::default())
        .run_from_args()
}
