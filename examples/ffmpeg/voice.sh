#!/bin/sh
# The `voice` stage of examples/ffmpeg.toml: speaks a text into
# <dir>/voice.wav with espeak-ng.
#
# usage: voice.sh <output dir> <text>
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: voice.sh <output dir> <text>" >&2
    exit 64
fi
dir=$1
text=$2

mkdir -p "$dir"
# Written beside the final name and renamed, so that a killed job never
# leaves a truncated voice.wav that a retry would take for a finished one.
espeak-ng -w "$dir/voice.partial.wav" -- "$text"
mv -f "$dir/voice.partial.wav" "$dir/voice.wav"
