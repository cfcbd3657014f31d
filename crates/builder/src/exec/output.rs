//! Where a step's output goes: the [`OutputSink`] trait and the line splitter that feeds it.

use serde::Serialize;

/// Which of the process's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives a running process's output, one line at a time, while it runs.
pub trait OutputSink {
    /// One line without its `\n` (and without a `\r` before it). A line longer than
    /// [`MAX_LINE`] arrives in pieces of at most that size; a last line without a newline
    /// arrives when the stream ends.
    fn line(&mut self, stream: Stream, line: &[u8]);

    /// A piece of a line longer than [`MAX_LINE`] that the line continues after; the rest
    /// comes in later calls (the last part through [`OutputSink::line`]). Sinks that keep
    /// output whole (log files) join the pieces; by default a piece is handed on as a line.
    fn piece(&mut self, stream: Stream, piece: &[u8]) {
        self.line(stream, piece);
    }

    /// Whether this sink takes the output exactly as the process wrote it, through
    /// [`OutputSink::bytes`], instead of as lines (`strata run` passes bytes through
    /// untouched: no line splitting, no `\r` dropped, no newline added at the end).
    fn raw(&self) -> bool {
        false
    }

    /// Output bytes as read from the process (called only when [`OutputSink::raw`]).
    fn bytes(&mut self, stream: Stream, data: &[u8]) {
        let _ = (stream, data);
    }

    /// The process id (in the caller's PID namespace) of the init of the command's
    /// namespaces, once it exists; killing it with `SIGKILL` ends everything the command
    /// started.
    fn started(&mut self, init_pid: u32) {
        let _ = init_pid;
    }
}

/// The longest piece of a line the executor buffers before handing it on, so a process
/// printing megabytes without a newline cannot make the builder's memory grow.
pub const MAX_LINE: usize = 64 * 1024;

/// Cuts a byte stream into lines, keeping at most [`MAX_LINE`] bytes of an unfinished line.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub(crate) fn new(stream: Stream) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    /// The stream it splits.
    pub(crate) fn stream(&self) -> Stream {
        self.stream
    }

    /// Feeds freshly read bytes; every completed line goes to `sink`.
    pub(crate) fn feed(&mut self, mut data: &[u8], sink: &mut dyn OutputSink) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let (head, rest) = data.split_at(nl);
                    self.push(head, sink);
                    self.emit(sink);
                    data = &rest[1..];
                }
                None => {
                    self.push(data, sink);
                    data = &[];
                }
            }
        }
    }

    /// Appends part of a line, handing on full-size pieces as they fill up.
    fn push(&mut self, mut part: &[u8], sink: &mut dyn OutputSink) {
        while self.pending.len() + part.len() > MAX_LINE {
            let room = MAX_LINE - self.pending.len();
            self.pending.extend_from_slice(&part[..room]);
            sink.piece(self.stream, &self.pending);
            self.pending.clear();
            part = &part[room..];
        }
        self.pending.extend_from_slice(part);
    }

    fn emit(&mut self, sink: &mut dyn OutputSink) {
        let line = self.pending.strip_suffix(b"\r").unwrap_or(&self.pending);
        sink.line(self.stream, line);
        self.pending.clear();
    }

    /// The stream ended: hands on an unfinished last line, if any.
    pub(crate) fn finish(&mut self, sink: &mut dyn OutputSink) {
        if !self.pending.is_empty() {
            self.emit(sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Lines(Vec<(Stream, Vec<u8>)>);

    impl OutputSink for Lines {
        fn line(&mut self, stream: Stream, line: &[u8]) {
            self.0.push((stream, line.to_vec()));
        }
    }

    /// Joins pieces back into whole lines.
    #[derive(Default)]
    struct Whole {
        lines: Vec<Vec<u8>>,
        partial: Vec<u8>,
    }

    impl OutputSink for Whole {
        fn line(&mut self, _: Stream, line: &[u8]) {
            self.partial.extend_from_slice(line);
            self.lines.push(std::mem::take(&mut self.partial));
        }
        fn piece(&mut self, _: Stream, piece: &[u8]) {
            self.partial.extend_from_slice(piece);
        }
    }

    #[test]
    fn pieces_say_that_the_line_goes_on() {
        let mut sink = Whole::default();
        let mut splitter = LineSplitter::new(Stream::Stdout);
        let mut data = vec![b'y'; MAX_LINE];
        data.push(b'\n');
        data.extend(vec![b'z'; MAX_LINE * 2 + 1]);
        data.push(b'\n');
        splitter.feed(&data, &mut sink);
        splitter.finish(&mut sink);
        assert_eq!(sink.lines.len(), 2);
        assert_eq!(sink.lines[0].len(), MAX_LINE);
        assert_eq!(sink.lines[1].len(), MAX_LINE * 2 + 1);
    }

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut sink = Lines::default();
        let mut splitter = LineSplitter::new(Stream::Stdout);
        for chunk in chunks {
            splitter.feed(chunk, &mut sink);
        }
        splitter.finish(&mut sink);
        sink.0.into_iter().map(|(_, l)| l).collect()
    }

    #[test]
    fn lines_across_chunk_boundaries() {
        assert_eq!(
            split(&[b"hel", b"lo\nwor", b"ld\n\nlast"]),
            [
                b"hello".to_vec(),
                b"world".to_vec(),
                b"".to_vec(),
                b"last".to_vec()
            ]
        );
    }

    #[test]
    fn crlf_is_one_terminator() {
        assert_eq!(split(&[b"a\r\nb\r", b"\n"]), [b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn long_lines_come_in_bounded_pieces() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut data = long.clone();
        data.extend_from_slice(b"\nend\n");
        let lines = split(&[&data[..1000], &data[1000..]]);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1].len(), MAX_LINE);
        assert_eq!(lines[2].len(), 10);
        assert_eq!(lines[3], b"end");
        assert_eq!(lines[..3].concat(), long);
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert!(split(&[b""]).is_empty());
    }
}
