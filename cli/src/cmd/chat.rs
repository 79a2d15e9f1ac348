//! `glm-tune chat --model DIR [--prefix CHECKPOINT] [--prompt TEXT]`: terminal chat with a base
//! model and a trained prefix, as the original `model.chat` / `stream_chat` (the conversation,
//! prompt template, streaming and post-processing live in `trainer::chat`).
//!
//! Interactive: answers stream as they are generated; `/reset`, `/prefix on|off`, `/help`,
//! `/quit`. Ctrl-C while an answer is generated stops that answer (it is kept, marked
//! `[interrupted]`); Ctrl-C at the prompt, `/quit` or end of input leaves. Lines are read by a
//! thread that forwards them (and Ctrl-C at the prompt) over a channel, so stdin may be a pipe.
//!
//! With `--prompt`, one answer is printed on stdout and nothing else; logs go to stderr.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use glm_model::GlmBackend;
use glm_model::loader::LoadOptions;
use trainer::chat::{
    ChatEngine, ChatInput, Conversation, HELP, PrefixSource, SamplingSettings, StreamEnd,
    TextStream, parse_input,
};
use trainer::config::{Device, Precision};
use trainer::device::{WithBackend, dispatch};
use trainer::step::TrainBackend;

/// Arguments of `glm-tune chat`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Model directory (config.json, weights, tokenizer) — a base model, or a merged model
    /// written by `glm-tune export --merge` (its prefix is then used).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// A trained prefix checkpoint (e.g. output/.../checkpoint-3000). Its own config.json gives
    /// pre_seq_len and prefix_projection.
    #[arg(long, value_name = "CHECKPOINT")]
    prefix: Option<PathBuf>,
    /// Quantize the base model's linears to 4 or 8 bits while loading (as the original's
    /// `quantization_bit`; a pre-quantized model directory loads quantized without it).
    #[arg(long, value_name = "4|8")]
    quantization_bit: Option<u8>,
    /// `cpu`, `cuda`, `cuda:N` or `vulkan` (GPU devices need a build with `--features cuda` or
    /// `--features vulkan`).
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Precision of the base model: `auto` (fp16 on a GPU, fp32 on CPU), fp32, fp16, bf16.
    #[arg(long, default_value = "auto")]
    precision: Precision,
    /// Nucleus sampling threshold (the original chat: 0.7).
    #[arg(long, default_value_t = 0.7)]
    top_p: f32,
    /// Sampling temperature (the original chat: 0.95).
    #[arg(long, default_value_t = 0.95)]
    temperature: f32,
    /// Keep the k most likely tokens (Hugging Face's default 50; 0 = off).
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Total length in tokens: the conversation so far plus the answer (the original: 2048).
    #[arg(long, default_value_t = 2048)]
    max_length: usize,
    /// At most this many tokens per answer.
    #[arg(long, value_name = "N")]
    max_new_tokens: Option<usize>,
    /// Greedy decoding instead of sampling.
    #[arg(long)]
    greedy: bool,
    /// Seed of the sampling (default: a new one every start, printed with --verbose).
    #[arg(long)]
    seed: Option<u64>,
    /// Answer this one prompt and exit: only the answer goes to stdout.
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Print every prompt (text and token ids) and answer statistics to stderr.
    #[arg(long, short)]
    verbose: bool,
}

/// Label printed before the user's input.
const USER: &str = "用户：";
/// Label printed before an answer.
const BOT: &str = "ChatGLM：";

/// Load and chat.
pub fn run(args: Args) -> anyhow::Result<()> {
    // Also refuses NaN.
    if args.temperature.is_nan() || args.temperature <= 0.0 {
        bail!("--temperature must be > 0 (use --greedy for deterministic answers)");
    }
    if !(0.0..=1.0).contains(&args.top_p) || args.top_p == 0.0 {
        bail!("--top-p must be in (0, 1]");
    }
    if let Some(bits) = args.quantization_bit.filter(|b| ![4, 8].contains(b)) {
        bail!("--quantization-bit {bits}: use 4 or 8");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let settings = SamplingSettings {
        do_sample: !args.greedy,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        max_length: args.max_length,
        max_new_tokens: args.max_new_tokens,
        seed,
    };
    let precision = match args.precision.resolve(args.device) {
        Precision::Fp16 => glm_model::Precision::Fp16,
        Precision::Bf16 => glm_model::Precision::Bf16,
        _ => glm_model::Precision::Fp32,
    };
    // Inference only: an f16 embedding table stays f16 (exact, half the memory of f32).
    let options = LoadOptions {
        precision,
        quantization_bit: args.quantization_bit,
        compact_frozen_embedding: true,
        ..Default::default()
    };
    let device = args.device;
    dispatch(
        device,
        ChatJob {
            args,
            options,
            settings,
        },
    )?
}

struct ChatJob {
    args: Args,
    options: LoadOptions,
    settings: SamplingSettings,
}

impl WithBackend for ChatJob {
    type Output = anyhow::Result<()>;
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        // Inference only: the backend without autodiff.
        session::<B::InnerBackend>(self, &device)
    }
}

/// What the reader thread and the Ctrl-C handler send to the chat loop.
enum Event {
    Line(String),
    Eof,
    Interrupt,
}

/// What Ctrl-C does now: leave at once (while loading), leave through the chat loop (between
/// answers), or stop the answer being generated.
const LOADING: u8 = 0;
const IDLE: u8 = 1;
const GENERATING: u8 = 2;

/// Shared between the chat loop and the Ctrl-C handler.
#[derive(Clone)]
struct Controls {
    /// `LOADING`, `IDLE` or `GENERATING`.
    mode: Arc<AtomicU8>,
    /// Ctrl-C asked the current answer to stop.
    stop: Arc<AtomicBool>,
}

fn install_ctrl_c(controls: &Controls, events: Sender<Event>) {
    let c = controls.clone();
    let installed = ctrlc::set_handler(move || match c.mode.load(Ordering::SeqCst) {
        GENERATING => {
            if c.stop.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted twice: exiting");
                std::process::exit(130);
            }
        }
        IDLE => {
            let _ = events.send(Event::Interrupt);
        }
        _ => {
            eprintln!("\ninterrupted");
            std::process::exit(130);
        }
    });
    if let Err(e) = installed {
        tracing::warn!("Ctrl-C handler not installed: {e}");
    }
}

fn session<B: GlmBackend>(job: ChatJob, device: &B::Device) -> anyhow::Result<()> {
    let args = job.args;
    let (tx, rx) = mpsc::channel();
    let controls = Controls {
        mode: Arc::new(AtomicU8::new(LOADING)),
        stop: Arc::new(AtomicBool::new(false)),
    };
    install_ctrl_c(&controls, tx.clone());
    let start = Instant::now();
    let mut engine = ChatEngine::<B>::load(
        &args.model,
        args.prefix.as_deref(),
        &job.options,
        job.settings,
        device,
    )?;
    let quantized = match engine.model.config.quantization_bit {
        Some(bits) if bits != 0 => format!(", int{bits}"),
        _ => String::new(),
    };
    eprintln!(
        "loaded model {} in {:.2} s ({}, {:?}{quantized}, {} tensors)",
        args.model.display(),
        engine.load.seconds,
        engine.load.format,
        job.options.precision,
        engine.load.tensors
    );
    if let Some(p) = &engine.prefix {
        let from = match &p.source {
            PrefixSource::Checkpoint(dir) => dir.display().to_string(),
            PrefixSource::Merged(_) => "the merged model".to_string(),
        };
        eprintln!(
            "loaded prefix of {from} in {:.2} s (pre_seq_len {}, prefix_projection {})",
            p.seconds, p.info.pre_seq_len, p.info.prefix_projection
        );
        if let Some(bits) = p
            .info
            .quantization_bit
            .filter(|&b| b != 0 && Some(b) != engine.model.config.quantization_bit)
        {
            eprintln!(
                "note: the prefix was trained on an int{bits} base; add --quantization-bit {bits} to answer with the same base"
            );
        }
    }
    eprintln!("ready in {:.2} s", start.elapsed().as_secs_f64());
    if args.verbose {
        eprintln!("sampling seed {}", engine.settings.seed);
    }

    if let Some(prompt) = &args.prompt {
        let mut out = std::io::stdout().lock();
        let (_, interrupted) = stream_answer(
            &mut engine,
            &Conversation::new().prompt(prompt),
            &controls,
            args.verbose,
            &mut out,
        )?;
        writeln!(out)?;
        out.flush()?;
        if interrupted {
            bail!("interrupted by Ctrl-C; the partial answer was printed");
        }
        return Ok(());
    }
    controls.mode.store(IDLE, Ordering::SeqCst);
    spawn_reader(tx);
    interactive(&mut engine, &args, &controls, &rx)
}

/// Read stdin line by line on a thread; end of input (or an unreadable stdin) ends the chat.
fn spawn_reader(tx: Sender<Event>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            let mut line = String::new();
            match lock.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Event::Eof);
                    return;
                }
                Ok(_) => {
                    if tx.send(Event::Line(line)).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

fn interactive<B: GlmBackend>(
    engine: &mut ChatEngine<B>,
    args: &Args,
    controls: &Controls,
    rx: &Receiver<Event>,
) -> anyhow::Result<()> {
    let echo = !std::io::stdin().is_terminal();
    let mut out = std::io::stdout().lock();
    let prefix_note = if engine.prefix.is_some() {
        ", /prefix off|on to compare with the base model"
    } else {
        ""
    };
    writeln!(
        out,
        "glm-tune chat with {}: type a question; /help lists the commands{prefix_note}.",
        args.model.display()
    )?;
    let mut conversation = Conversation::new();
    let mut answered_at: Option<Instant> = None;
    loop {
        write!(out, "\n{USER}")?;
        out.flush()?;
        let line = loop {
            match rx.recv() {
                Ok(Event::Line(line)) => break Some(line),
                Ok(Event::Eof) | Err(_) => break None,
                // A Ctrl-C meant for an answer that had just ended is not a request to leave.
                Ok(Event::Interrupt)
                    if answered_at.is_some_and(|t| t.elapsed() < Duration::from_millis(300)) =>
                {
                    continue;
                }
                Ok(Event::Interrupt) => break None,
            }
        };
        let Some(line) = line else {
            writeln!(out)?;
            return Ok(());
        };
        if echo {
            write!(out, "{}", line.trim_end_matches(['\n', '\r']))?;
            writeln!(out)?;
        }
        match parse_input(&line) {
            ChatInput::Empty => {}
            ChatInput::Quit => return Ok(()),
            ChatInput::Help => writeln!(out, "{HELP}")?,
            ChatInput::Unknown(message) => writeln!(out, "({message})")?,
            ChatInput::Reset => {
                conversation.reset();
                writeln!(out, "(history cleared: a new conversation starts)")?;
            }
            ChatInput::Prefix(None) => writeln!(out, "({})", prefix_state(engine))?,
            ChatInput::Prefix(Some(on)) => match engine.set_prefix(on) {
                Ok(()) => writeln!(out, "({})", prefix_state(engine))?,
                Err(e) => writeln!(out, "({e})")?,
            },
            ChatInput::Query(query) => {
                let prompt = conversation.prompt(&query);
                match generate_reply(engine, &prompt, controls, args.verbose, &mut out) {
                    Ok((answer, _)) => conversation.push(&query, &answer),
                    Err(e) => {
                        out.flush()?;
                        eprintln!("error: {e:#}");
                    }
                }
                answered_at = Some(Instant::now());
            }
        }
    }
}

fn prefix_state<B: GlmBackend>(engine: &ChatEngine<B>) -> String {
    match (&engine.prefix, engine.prefix_on()) {
        (None, _) => "no prefix loaded: the base model answers".into(),
        (Some(p), true) => format!(
            "prefix on (pre_seq_len {}): the trained prefix answers",
            p.info.pre_seq_len
        ),
        (Some(_), false) => "prefix off: the base model answers".into(),
    }
}

/// One streamed answer after the answer label; returns the answer for the history.
fn generate_reply<B: GlmBackend>(
    engine: &mut ChatEngine<B>,
    prompt: &str,
    controls: &Controls,
    verbose: bool,
    out: &mut impl Write,
) -> anyhow::Result<(String, bool)> {
    write!(out, "{BOT}")?;
    out.flush()?;
    let (answer, interrupted) = stream_answer(engine, prompt, controls, verbose, out)?;
    if interrupted {
        write!(out, " [interrupted]")?;
    }
    writeln!(out)?;
    out.flush()?;
    Ok((answer, interrupted))
}

/// Generate for `prompt`, writing the answer to `out` as it grows.
fn stream_answer<B: GlmBackend>(
    engine: &mut ChatEngine<B>,
    prompt: &str,
    controls: &Controls,
    verbose: bool,
    out: &mut impl Write,
) -> anyhow::Result<(String, bool)> {
    if verbose {
        eprintln!("prompt: {prompt:?}");
        eprintln!("prompt ids: {:?}", engine.prompt_ids(prompt));
        eprintln!("prefix: {}", if engine.prefix_on() { "on" } else { "off" });
    }
    let mut stream = TextStream::new();
    let mut write_error = None;
    controls.stop.store(false, Ordering::SeqCst);
    controls.mode.store(GENERATING, Ordering::SeqCst);
    let stop = controls.stop.clone();
    let result = engine.reply(
        prompt,
        &mut |so_far| {
            let delta = stream.update(so_far);
            if !delta.is_empty()
                && write_error.is_none()
                && let Err(e) = out.write_all(delta.as_bytes()).and_then(|()| out.flush())
            {
                write_error = Some(e);
            }
        },
        &|| stop.load(Ordering::SeqCst),
    );
    controls.mode.store(IDLE, Ordering::SeqCst);
    let reply = result?;
    if let Some(e) = write_error {
        return Err(e).context("writing the answer");
    }
    match stream.finish(&reply.answer) {
        StreamEnd::Append(rest) => write!(out, "{rest}")?,
        StreamEnd::Rewrite(all) => write!(out, "\n{all}")?,
    }
    out.flush()?;
    if verbose {
        eprintln!("answer ids: {:?}", reply.ids);
        let rate = reply.new_tokens as f64 / reply.seconds.max(1e-9);
        eprintln!(
            "[{} prompt tokens, {} new tokens in {:.2} s, {rate:.1} tokens/s{}]",
            reply.prompt_tokens,
            reply.new_tokens,
            reply.seconds,
            if reply.truncated {
                ", stopped at the length limit"
            } else {
                ""
            }
        );
    }
    Ok((reply.answer, reply.interrupted))
}
