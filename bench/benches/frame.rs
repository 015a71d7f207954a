//! Frame codec cost per message size: encode (rkyv + CRC + header) and decode
//! (cut from a stream, CRC, align, validate), with the plain CRC over the same
//! bytes as a floor beside it.

use corekv_rpc::frame::{FRAME_PAYLOAD_BYTES_MAX, FrameDecoder, access, encode};
use corekv_rpc::raft::{Entry, EntryKind, Message, MessageBody};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn append(entries: usize, bytes: usize) -> Message {
    let entries = (0..entries)
        .map(|i| Entry { term: 3, index: i as u64 + 1, kind: EntryKind::Normal, data: vec![7; bytes] })
        .collect();
    Message { from: 1, to: 2, term: 3, body: MessageBody::Append { prev_index: 0, prev_term: 0, entries, commit: 0 } }
}

fn frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for (entries, bytes) in [(1usize, 128usize), (16, 128), (64, 4096)] {
        let msg = append(entries, bytes);
        let mut stream = Vec::new();
        encode(&msg, &mut stream).expect("encodes");
        let label = format!("{entries}x{bytes}B");
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", &label), &msg, |b, msg| {
            let mut out = Vec::with_capacity(stream.len());
            b.iter(|| {
                out.clear();
                encode(msg, &mut out).expect("encodes");
            });
        });
        group.bench_with_input(BenchmarkId::new("decode_validate", &label), &stream, |b, stream| {
            let mut d = FrameDecoder::new(FRAME_PAYLOAD_BYTES_MAX);
            b.iter(|| {
                d.feed(stream);
                let payload = d.next_frame().expect("valid").expect("complete");
                access::<Message>(&payload).expect("valid archive");
            });
        });
        group.bench_with_input(BenchmarkId::new("crc32_floor", &label), &stream, |b, stream| {
            b.iter(|| crc32fast::hash(stream));
        });
    }
    group.finish();
}

criterion_group!(benches, frame);
criterion_main!(benches);
