#!/bin/sh
# The `render` stage of examples/ffmpeg.toml: turns <voice dir>/voice.wav
# into <out dir>/video.mp4, a navy 640x360 picture as long as the voice,
# with the text drawn on it when ffmpeg can draw text.
#
# usage: render.sh <voice dir> <out dir> [text]
set -eu

if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
    echo "usage: render.sh <voice dir> <out dir> [text]" >&2
    exit 64
fi
text=${3:-}
if [ ! -f "$1/voice.wav" ]; then
    echo "render.sh: no $1/voice.wav (did the voice stage run?)" >&2
    exit 66
fi
voice=$(cd "$1" && pwd)/voice.wav
mkdir -p "$2"
# Everything from here on is relative to the output dir, which is where
# drawtext looks for its text file.
cd "$2"
partial=video.partial.mp4
final=video.mp4

# H.264 where this ffmpeg has libx264; MPEG-4 part 2 plays nearly
# everywhere too and is built into every ffmpeg.
if ffmpeg -hide_banner -encoders 2>/dev/null | grep -q ' libx264 '; then
    video_codec="-c:v libx264 -preset veryfast -crf 28"
else
    video_codec="-c:v mpeg4 -q:v 5"
fi

# $1: the video filter ("null" for none).
encode() {
    # -shortest: the colour source is endless, the voice sets the length.
    # $video_codec is left unquoted on purpose: it is several arguments.
    # shellcheck disable=SC2086
    ffmpeg -nostdin -hide_banner -loglevel error -y \
        -f lavfi -i "color=c=navy:s=640x360:r=25" \
        -i "$voice" \
        -vf "$1" \
        $video_codec -pix_fmt yuv420p \
        -c:a aac -b:a 96k \
        -shortest -movflags +faststart \
        -f mp4 "$partial"
}

drawn=no
if [ -n "$text" ] && ffmpeg -hide_banner -filters 2>/dev/null | grep -q ' drawtext '; then
    # The text goes through a file, so that no quoting of it is needed in
    # the filter, and expansion=none keeps a '%' a '%'. Fonts may be missing
    # (drawtext then fails): the plain picture below is the fallback.
    printf '%s' "$text" > title.txt
    if encode "drawtext=textfile=title.txt:expansion=none:fontcolor=white:fontsize=28:x=(w-text_w)/2:y=(h-text_h)/2" 2>drawtext.err; then
        drawn=yes
    else
        # Kept in the job's stderr log: why the video has no text.
        echo "render.sh: drawtext failed, rendering without text:" >&2
        cat drawtext.err >&2
    fi
fi
if [ "$drawn" = no ]; then
    encode null
fi
rm -f drawtext.err
mv -f "$partial" "$final"
