use std::process::ExitCode;

fn main() -> ExitCode {
    match sam_cobot::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
