//! `/init` of the P2V live image: everything is in the `p2v_init` library.

fn main() {
    if std::process::id() != 1 {
        eprintln!("p2v-init is the init of the P2V live image; it runs only as PID 1");
        std::process::exit(2);
    }
    // A panic must not kill PID 1 (that is a kernel panic): report it and stay.
    std::panic::set_hook(Box::new(|info| {
        p2v_init::console::line(&format!("p2v: capture FAILED: internal error: {info}"));
    }));
    let result = std::panic::catch_unwind(|| p2v_init::run::main());
    if result.is_err() {
        p2v_init::run::stay();
    }
}
