//! `policy_node`: the ROS 2 node. Thin: the command line outside `--ros-args` here, the node
//! in `policy_node::ros` (parameters -> control loop -> spin until SIGINT / SIGTERM).
use std::process::ExitCode;

use policy_node::ros::{self, Cli};

fn main() -> ExitCode {
    let cli = match Cli::parse(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("policy_node: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.help {
        print!("{}", Cli::help_text());
        return ExitCode::SUCCESS;
    }
    if cli.version {
        println!("policy_node {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match ros::run(&cli) {
        Ok(_summary) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            eprintln!("policy_node: {}", ros::error_line(&e));
            ExitCode::from(code)
        }
    }
}
