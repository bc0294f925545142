//! Embedding Tessera in a Rust program, starting from a kernel in a string: the compiler turns it
//! into PTX (through the compile cache, so a second run compiles nothing), the runtime loads it,
//! uploads typed host slices, launches, and reads the result back. Without a GPU the same kernel
//! runs on the reference interpreter.
//!
//! Run with `cargo run --release --example from_string [-- N]`.

use tessera_compiler::interp::Arg;
use tessera_compiler::{Options, Scalar, Source};
use tessera_runtime::{Runtime, Tensor, tensor};

/// `out = a·x + y`, elementwise, over vectors of any length.
const SAXPY: &str = "
use std::math::cdiv;

#[grid(cdiv(N, BLOCK))]
kernel saxpy<const BLOCK: i32 = 1024>(x: &f32[N], y: &f32[N], out: &mut f32[N], a: f32) {
    let i = program_id(0) * BLOCK;
    out.store([i], x.load([i], [BLOCK]) * a + y.load([i], [BLOCK]));
}
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(100_003);
    let a = 2.5f32;
    let xs: Vec<f32> = (0..n).map(|i| (i % 17) as f32 * 0.25 - 2.0).collect();
    let ys: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 1.5).collect();
    let src = Source::new("saxpy (a string)", SAXPY);

    let out = match Runtime::new() {
        Ok(rt) => {
            let t0 = std::time::Instant::now();
            let program = rt.compile(&src, &Options::default())?;
            println!("compiled and loaded in {:.1} ms (cache: {})", t0.elapsed().as_secs_f64() * 1e3, program.hit.name());
            for note in &program.notes {
                println!("{note}");
            }
            let saxpy = program.kernel("saxpy")?;
            let x: Tensor<f32> = rt.tensor(&xs, &[n])?;
            let y = rt.tensor(&ys, &[n])?;
            let out = rt.zeros::<f32>(&[n])?;
            rt.launch(saxpy, &[x.arg(), y.arg(), out.arg(), a.into()])?;
            println!("ran on the GPU ({})", rt.device_name());
            out.to_vec(&rt)?
        }
        Err(e) => {
            println!("no GPU ({e}); running on the interpreter");
            let module = tessera_compiler::compile(&src, &Options::default()).map_err(|d| d.render())?;
            let k = module.kernel("saxpy").ok_or("no kernel `saxpy`")?;
            let mut args = vec![
                Arg::Tensor(tensor::host_tensor(&xs, &[n])?),
                Arg::Tensor(tensor::host_tensor(&ys, &[n])?),
                Arg::Tensor(tensor::host_tensor(&vec![0.0f32; n], &[n])?),
                Arg::Scalar(Scalar::Float(a as f64)),
            ];
            tessera_runtime::exec::run_interp(k, &mut args)?;
            let Arg::Tensor(out) = &args[2] else { return Err("the output is not a tensor".into()) };
            tensor::from_bytes::<f32>(&out.bytes)
        }
    };

    let bad = (0..n).filter(|&i| out[i] != a * xs[i] + ys[i]).count();
    println!("out[0..4] = {:?}", &out[..n.min(4)]);
    if bad > 0 {
        return Err(format!("{bad} of {n} elements differ from a·x + y").into());
    }
    println!("ok: all {n} elements equal a·x + y");
    Ok(())
}
