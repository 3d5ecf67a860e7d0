fn main() {
    std::process::exit(p2pu::run(std::env::args_os()));
}
