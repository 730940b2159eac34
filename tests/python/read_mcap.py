#!/usr/bin/env python3
"""Reads an MCAP file with the mcap project's own Python reader (PyPI `mcap`), checking every
chunk's CRC, and prints what it holds as one JSON document: the summary (chunk and message
indexes, statistics), the channels with their schemas, and every message in file order with its
log time and JSON payload.

    python3 tests/python/read_mcap.py FILE
"""
import json
import sys

from mcap.reader import make_reader


def main(path):
    with open(path, "rb") as f:
        reader = make_reader(f, validate_crcs=True)
        summary = reader.get_summary()
        if summary is None:
            raise SystemExit(f"{path}: no summary section")
        channels = {}
        for channel in summary.channels.values():
            schema = summary.schemas[channel.schema_id]
            channels[channel.topic] = {
                "encoding": channel.message_encoding,
                "schema_name": schema.name,
                "schema_encoding": schema.encoding,
                "schema": json.loads(schema.data),
            }
        messages = []
        for _schema, channel, message in reader.iter_messages(log_time_order=False):
            messages.append({
                "topic": channel.topic,
                "log_time": message.log_time,
                "publish_time": message.publish_time,
                "data": json.loads(message.data),
            })
        # Seeking by time through the indexes, as a viewer does: the last message's time only.
        if messages:
            end = max(m["log_time"] for m in messages)
            seeked = list(reader.iter_messages(start_time=end, log_time_order=True))
            if not seeked:
                raise SystemExit("seeking to the last message's time found nothing")
        out = {
            "chunks": len(summary.chunk_indexes),
            "message_index_channels": sorted({ch for idx in summary.chunk_indexes for ch in idx.message_index_offsets}),
            "statistics": {
                "messages": summary.statistics.message_count,
                "channels": summary.statistics.channel_count,
                "schemas": summary.statistics.schema_count,
            },
            "compression": sorted({idx.compression for idx in summary.chunk_indexes}),
            "channels": channels,
            "messages": messages,
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
