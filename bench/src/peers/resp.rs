//! RESP2, the Redis wire protocol, as far as the Redis driver needs it: commands
//! out as arrays of bulk strings, replies in (simple string, error, integer, bulk
//! string, array). Pure: bytes in, values out, so it is tested here without a
//! server.

/// Longest bulk string or array a reply may announce (a bigger one is a broken
/// stream, not a value this bench asked for).
const REPLY_LEN_MAX: i64 = 512 << 20;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(Vec<u8>),
    /// `-ERR …`.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3 abc`; `None` for the null bulk string (`$-1`, a missing key).
    Bulk(Option<Vec<u8>>),
    /// `*2 …`; `None` for the null array.
    Array(Option<Vec<Reply>>),
}

/// A reply stream that is not RESP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed RESP reply: {0}")]
pub struct RespError(pub String);

/// Appends the command `args` (name first) to `out`.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The first reply in `buf` and the bytes it took, `None` while it is incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    let Some(line_end) = find_crlf(buf) else { return Ok(None) };
    let Some((&tag, line)) = buf[..line_end].split_first() else {
        return Err(RespError("empty line".into()));
    };
    let after_line = line_end + 2;
    match tag {
        b'+' => Ok(Some((Reply::Simple(line.to_vec()), after_line))),
        b'-' => Ok(Some((Reply::Error(String::from_utf8_lossy(line).into_owned()), after_line))),
        b':' => Ok(Some((Reply::Integer(number(line)?), after_line))),
        b'$' => {
            let len = length(line)?;
            let Some(len) = len else { return Ok(Some((Reply::Bulk(None), after_line))) };
            let end = after_line + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError("bulk string not followed by CRLF".into()));
            }
            Ok(Some((Reply::Bulk(Some(buf[after_line..end].to_vec())), end + 2)))
        }
        b'*' => {
            let Some(count) = length(line)? else { return Ok(Some((Reply::Array(None), after_line))) };
            let mut items = Vec::with_capacity(count.min(1024));
            let mut at = after_line;
            for _ in 0..count {
                let Some((item, used)) = parse(&buf[at..])? else { return Ok(None) };
                items.push(item);
                at += used;
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => Err(RespError(format!("unknown type byte {:?}", other as char))),
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn number(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RespError(format!("{:?} is not an integer", String::from_utf8_lossy(line))))
}

/// A bulk or array length: `None` for -1 (null).
fn length(line: &[u8]) -> Result<Option<usize>, RespError> {
    match number(line)? {
        -1 => Ok(None),
        n if (0..=REPLY_LEN_MAX).contains(&n) => Ok(Some(n as usize)),
        n => Err(RespError(format!("length {n} out of range"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k\r\n", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n");
    }

    #[test]
    fn every_reply_type_parses() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Some((Reply::Simple(b"OK".to_vec()), 5)));
        assert_eq!(parse(b"-ERR no\r\n").unwrap(), Some((Reply::Error("ERR no".into()), 9)));
        assert_eq!(parse(b":-7\r\n").unwrap(), Some((Reply::Integer(-7), 5)));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Reply::Bulk(None), 5)));
        assert_eq!(parse(b"$4\r\na\r\nb\r\n").unwrap(), Some((Reply::Bulk(Some(b"a\r\nb".to_vec())), 10)));
        let array = b"*2\r\n$1\r\nx\r\n:1\r\n";
        let expected = Reply::Array(Some(vec![Reply::Bulk(Some(b"x".to_vec())), Reply::Integer(1)]));
        assert_eq!(parse(array).unwrap(), Some((expected, array.len())));
        assert_eq!(parse(b"*-1\r\n").unwrap(), Some((Reply::Array(None), 5)));
    }

    #[test]
    fn incomplete_replies_wait_for_more_bytes() {
        let whole = b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse(whole).unwrap().is_some());
    }

    #[test]
    fn pipelined_replies_parse_one_after_another() {
        let stream = b"+OK\r\n$2\r\nhi\r\n";
        let (first, used) = parse(stream).unwrap().unwrap();
        assert_eq!(first, Reply::Simple(b"OK".to_vec()));
        assert_eq!(parse(&stream[used..]).unwrap().unwrap().0, Reply::Bulk(Some(b"hi".to_vec())));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(b"?\r\n").is_err());
        assert!(parse(b":x\r\n").is_err());
        assert!(parse(b"$-2\r\n").is_err());
        assert!(parse(b"$1\r\nab\r\n").is_err());
        assert!(parse(b"\r\n").is_err());
    }
}
