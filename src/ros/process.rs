//! Process-level helpers of the node binary: the error line it prints, and the thread
//! priority of its control and spin threads.

/// The error and each cause in its chain not already part of the message (most of our errors
/// already quote their cause: it is said once).
pub fn error_line(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = c.source();
    }
    message
}

/// Puts the calling thread under `SCHED_FIFO` at `priority`, reset on fork (threads it starts
/// later get normal priority). Fails without `CAP_SYS_NICE` or a high enough `rtprio` limit.
pub fn set_realtime_priority(priority: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: plain system call on the calling thread (pid 0) with a valid parameter.
        let rc = unsafe {
            libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = priority;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "real-time priority is only set on Linux",
        ))
    }
}
