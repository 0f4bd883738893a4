//! One client connection: read, parse every complete request, run them in waves, write every
//! reply with one write, repeat.
//!
//! Replies are strictly in request order. Local commands are answered at once (in order, so an
//! AUTH takes effect for the requests after it); keyed commands join the current wave (see
//! [`crate::wave`]) and run concurrently with it; barriers (SCAN, KEYS, DBSIZE, MSETNX, INFO,
//! HELLO, QUIT) run alone after the wave before them. A request that breaks the protocol gets
//! Redis's protocol error after the replies of the requests before it, and the connection is
//! closed. Buffers are per connection and reused; a read buffer that grew for a large request
//! shrinks back once it is drained.
use crate::command::{lookup, Access, Args, Cmd};
use crate::parse::{arity, Command};
use crate::reply::{errors, Reply};
use crate::resp::{Limits, ProtocolError, Request, RequestParser, Span};
use crate::wave::WavePlan;
use crate::{exec, local, Session, Shared};
use futures_util::future::{join, join_all};
use std::future::Future;
use std::io;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vasto_client::GetResult;

/// Bytes the read buffer has room for before each read.
const READ_CHUNK: usize = 64 * 1024;
/// Requests parsed per round; the rest wait for the next round (bounds the replies buffered).
const MAX_BATCH: usize = 4096;
/// Once this many reply bytes are buffered they are written before more requests run.
const OUT_HIGH_WATER: usize = 8 << 20;
/// A read buffer larger than this is shrunk back when it holds little.
const SHRINK_ABOVE: usize = 1 << 20;

/// Serves one connection until the client closes it, sends QUIT, breaks the protocol, or the
/// socket fails.
pub async fn serve(shared: &Shared, mut stream: TcpStream, id: u64) {
    let _ = stream.set_nodelay(true);
    let mut session = Session::new(id, shared.config.password.is_none());
    let mut state = Buffers::default();
    let mut parse_first = false;
    loop {
        if !parse_first {
            if state.input.capacity() - state.input.len() < READ_CHUNK {
                state.input.reserve(READ_CHUNK);
            }
            match stream.read_buf(&mut state.input).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let (consumed, error, more) = state.parse(&session);
        parse_first = more;
        if !state.requests.is_empty() && run_batch(shared, &mut session, &mut state, &mut stream).await.is_err() {
            return;
        }
        if let Some(e) = &error {
            emit(shared, &Reply::err(e), &session, &mut state.out);
        }
        if !state.out.is_empty() {
            if stream.write_all(&state.out).await.is_err() {
                return;
            }
            state.out.clear();
        }
        if error.is_some() || session.quit {
            let _ = stream.shutdown().await;
            return;
        }
        state.input.drain(..consumed);
        if state.input.capacity() > SHRINK_ABOVE && state.input.len() < READ_CHUNK {
            state.input.shrink_to(READ_CHUNK);
        }
        if state.out.capacity() > SHRINK_ABOVE {
            state.out.shrink_to(READ_CHUNK);
        }
    }
}

#[derive(Default)]
struct Buffers {
    input: Vec<u8>,
    out: Vec<u8>,
    spans: Vec<Span>,
    requests: Vec<Request>,
    parser: RequestParser,
    plan: WavePlan,
    /// Outcomes of a wave's GETs.
    reads: Vec<GetResult>,
}

impl Buffers {
    /// Parses the complete requests at the start of the input: returns how many bytes they
    /// take, the protocol error after them (if any), and whether more complete requests may be
    /// waiting (parsing stopped early: after AUTH or HELLO of an unauthenticated client, whose
    /// limits they change, after QUIT, or at [`MAX_BATCH`]).
    fn parse(&mut self, session: &Session) -> (usize, Option<ProtocolError>, bool) {
        self.spans.clear();
        self.requests.clear();
        let limits = if session.authed { Limits::DEFAULT } else { Limits::UNAUTHENTICATED };
        let mut from = 0;
        while self.requests.len() < MAX_BATCH {
            match self.parser.next(&mut self.input, from, &mut self.spans, &limits) {
                Ok(Some(req)) => {
                    from = req.end;
                    let name = Args::new(&self.input, self.spans.get(req.args.clone()).unwrap_or_default()).get(0);
                    let stop = (!session.authed && local::changes_auth(name)) || lookup(name) == Some(Cmd::Quit);
                    self.requests.push(req);
                    if stop {
                        return (from, None, true);
                    }
                }
                Ok(None) => return (from, None, false),
                Err(e) => return (from, Some(e), false),
            }
        }
        (from, None, true)
    }
}

/// What one request turned into.
enum Planned<'a> {
    /// Answered already (local commands and every error).
    Ready(Reply),
    /// Runs in a wave.
    Keyed(Cmd, Command<'a>, Access),
    /// Runs alone.
    Alone(Cmd, Command<'a>),
}

async fn run_batch(shared: &Shared, session: &mut Session, state: &mut Buffers, stream: &mut TcpStream) -> io::Result<()> {
    let Buffers { input, out, spans, requests, plan, reads, .. } = state;
    let now_ms = (vasto_client::now_ns() / 1_000_000) as i64;
    let args_of = |req: &Request| Args::new(input, spans.get(req.args.clone()).unwrap_or_default());
    if let [only] = requests.as_slice() {
        // One request (no pipelining): no wave to build.
        let reply = match plan_one(shared, session, args_of(only), now_ms) {
            Planned::Ready(reply) => reply,
            Planned::Keyed(cmd, command, _) | Planned::Alone(cmd, command) => alone(shared, session, cmd, &command).await,
        };
        emit(shared, &reply, session, out);
        return Ok(());
    }
    let mut wave = Wave::default();
    plan.clear();
    for req in requests.iter() {
        match plan_one(shared, session, args_of(req), now_ms) {
            Planned::Ready(reply) if wave.order.is_empty() => emit(shared, &reply, session, out),
            Planned::Ready(reply) => wave.order.push(Part::Ready(reply)),
            Planned::Keyed(cmd, command, access) => {
                if !plan.admits(access, command.key_count(), command.keys()) {
                    wave.finish(shared, session, reads, out).await;
                    plan.clear();
                }
                plan.add(access, command.keys());
                match command {
                    // Plain GETs of a wave go to the stores together (see `Keyspace::get_each`).
                    Command::Get(key) if key.len() <= crate::MAX_KEY => {
                        wave.gets.push(key);
                        wave.order.push(Part::Get);
                    }
                    command => {
                        let n = command.event_times();
                        let t = if n > 0 { shared.clock.reserve(n) } else { 0 };
                        wave.runs.push(timed(shared, cmd, command, t));
                        wave.order.push(Part::Run);
                    }
                }
            }
            Planned::Alone(cmd, command) => {
                wave.finish(shared, session, reads, out).await;
                plan.clear();
                let reply = alone(shared, session, cmd, &command).await;
                emit(shared, &reply, session, out);
            }
        }
        if out.len() >= OUT_HIGH_WATER {
            // The replies buffered so far precede every pending one: they can go now.
            stream.write_all(out).await?;
            out.clear();
        }
    }
    wave.finish(shared, session, reads, out).await;
    Ok(())
}

/// Runs one command by itself (a barrier, or a request that came alone).
async fn alone(shared: &Shared, session: &mut Session, cmd: Cmd, command: &Command<'_>) -> Reply {
    let started = Instant::now();
    let reply = match local::run(shared, session, command) {
        Some(reply) => reply,
        None => {
            let n = command.event_times();
            exec::run(shared, command, if n > 0 { shared.clock.reserve(n) } else { 0 }).await
        }
    };
    shared.stats.record(cmd, started.elapsed().as_micros() as u64, reply.is_error());
    reply
}

/// One position of a wave's replies.
enum Part {
    /// Answered when planned.
    Ready(Reply),
    /// The next of the wave's running commands.
    Run,
    /// The next of the wave's plain GETs.
    Get,
}

/// The commands of one wave: their reply positions in request order, the commands that run
/// as futures of their own, and the keys of the plain GETs, read together.
struct Wave<'a, F> {
    order: Vec<Part>,
    runs: Vec<F>,
    gets: Vec<&'a [u8]>,
}

impl<F> Default for Wave<'_, F> {
    fn default() -> Self {
        Self { order: Vec::new(), runs: Vec::new(), gets: Vec::new() }
    }
}

impl<F: Future<Output = Reply>> Wave<'_, F> {
    /// Runs the wave to completion and encodes its replies in order; the wave is empty after.
    /// `reads` is scratch for the GETs' outcomes. A GET's time in INFO's commandstats is the
    /// time its wave's reads took.
    async fn finish(&mut self, shared: &Shared, session: &Session, reads: &mut Vec<GetResult>, out: &mut Vec<u8>) {
        if self.order.is_empty() {
            return;
        }
        let started = Instant::now();
        let run_all = async {
            match self.runs.len() {
                0 => Vec::new(),
                1 => match self.runs.pop() {
                    Some(only) => vec![only.await],
                    None => Vec::new(),
                },
                _ => join_all(self.runs.drain(..)).await,
            }
        };
        let read_all = async {
            if self.gets.is_empty() {
                reads.clear();
            } else {
                shared.keyspace.get_each(&self.gets, reads).await;
            }
        };
        let (replies, ()) = join(run_all, read_all).await;
        let read_usec = started.elapsed().as_micros() as u64;
        let (mut replies, mut read) = (replies.into_iter(), reads.drain(..));
        for part in self.order.drain(..) {
            let reply = match part {
                Part::Ready(reply) => reply,
                Part::Run => replies.next().unwrap_or_else(|| Reply::err("internal error: a reply went missing")),
                Part::Get => {
                    let reply = match read.next() {
                        Some(Ok(value)) => Reply::bulk_or_null(value),
                        Some(Err(e)) => exec::client_error(e),
                        None => Reply::err("internal error: a reply went missing"),
                    };
                    shared.stats.record(Cmd::Get, read_usec, reply.is_error());
                    reply
                }
            };
            emit(shared, &reply, session, out);
        }
        self.gets.clear();
    }
}

async fn timed(shared: &Shared, cmd: Cmd, command: Command<'_>, t: u64) -> Reply {
    let started = Instant::now();
    let reply = exec::run(shared, &command, t).await;
    shared.stats.record(cmd, started.elapsed().as_micros() as u64, reply.is_error());
    reply
}

/// Turns one request into a reply, or into a command to run. Checks in Redis's order: unknown
/// command, arity, authentication, then the command's own syntax.
fn plan_one<'a>(shared: &Shared, session: &mut Session, args: Args<'a>, now_ms: i64) -> Planned<'a> {
    shared.stats.commands_processed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Some(cmd) = lookup(args.get(0)) else { return Planned::Ready(unknown_command(args)) };
    if !cmd.arity_ok(args.len()) {
        shared.stats.reject(cmd);
        return Planned::Ready(arity(cmd.spec().name));
    }
    if !session.authed && !cmd.no_auth() {
        shared.stats.reject(cmd);
        return Planned::Ready(errors::NOAUTH);
    }
    let command = match Command::parse(cmd, args, now_ms) {
        Ok(c) => c,
        Err(reply) => {
            shared.stats.record(cmd, 0, true);
            return Planned::Ready(reply);
        }
    };
    match command.access(cmd) {
        Access::Local => {
            let started = Instant::now();
            let reply = local::run(shared, session, &command).unwrap_or_else(|| Reply::err("command not handled by the gateway"));
            shared.stats.record(cmd, started.elapsed().as_micros() as u64, reply.is_error());
            Planned::Ready(reply)
        }
        Access::Barrier => Planned::Alone(cmd, command),
        access => Planned::Keyed(cmd, command, access),
    }
}

/// Redis 7's text: `unknown command 'foo', with args beginning with: 'a' 'b' ` (the name and
/// the argument list cut at 128 bytes).
fn unknown_command(args: Args<'_>) -> Reply {
    let name = args.get(0);
    let mut list = Vec::new();
    for arg in args.iter().skip(1) {
        if list.len() >= 128 {
            break;
        }
        let room = 128 - list.len();
        list.push(b'\'');
        list.extend_from_slice(&arg[..arg.len().min(room)]);
        list.extend_from_slice(b"' ");
    }
    Reply::err(format!(
        "unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(&name[..name.len().min(128)]),
        String::from_utf8_lossy(&list)
    ))
}

fn emit(shared: &Shared, reply: &Reply, session: &Session, out: &mut Vec<u8>) {
    if reply.is_error() {
        shared.stats.error_replies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    reply.encode(session.proto, out);
}
