//! A small program for the lab's own tests, run in pods by the process kubelet.
//!
//!   lab-testapp serve [PORT]   answer HTTP 200 on $POD_IP:PORT (default 8080) until SIGTERM
//!   lab-testapp exit CODE      print a line and exit with CODE
use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::atomic::{AtomicBool, Ordering},
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("exit") => {
            let code: i32 = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            println!("lab-testapp exiting with {code}");
            std::process::exit(code);
        }
        Some("serve") | None => serve(args.get(1).and_then(|p| p.parse().ok()).unwrap_or(8080)),
        Some(other) => {
            eprintln!("unknown command {other:?}; use serve [PORT] or exit CODE");
            std::process::exit(2);
        }
    }
}

fn serve(port: u16) {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
    }
    let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into());
    let listener = TcpListener::bind((ip.as_str(), port)).unwrap_or_else(|e| {
        eprintln!("cannot listen on {ip}:{port}: {e}");
        std::process::exit(1);
    });
    listener.set_nonblocking(true).expect("non-blocking listener");
    println!("lab-testapp serving on {ip}:{port} as pid {}", std::process::id());
    while !STOP.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    println!("lab-testapp got SIGTERM, exiting");
}
