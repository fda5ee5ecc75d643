"""Image sequences on disk (TUM RGB-D, KITTI odometry, any folder of images): frames, timestamps and intrinsics.

Convention:
    - A sequence is its frames in time order, each an image file and a stamp in integer nanoseconds, plus the
      camera's intrinsics where they are known (else None), the dataset's default topic and frame id.
    - TUM: a sequence directory with ``rgb.txt`` (``timestamp filename`` lines, ``#`` comments), or a folder of
      ``<timestamp>.png`` files (the ``rgb/`` folder of a download). Stamps are the dataset's (Unix time, seconds).
    - KITTI odometry: a sequence directory (``image_0/`` grey left, else ``image_2/`` colour left, ``times.txt``,
      ``calib.txt``) or one of its image folders. ``times.txt`` holds seconds from the start of the sequence; without
      it (a bare folder of ``000100.png`` ...) frames are ``1 / rate`` apart.
    - Folder: any images in name order, ``1 / rate`` apart.
    - Relative times (KITTI, folders) are shifted by ``start_time`` seconds: ROS reads time 0 as "unset" (a simulated
      clock at 0 has not started, a zero stamp means "latest" to tf2), so the default start is 1 s, not 0.
    - Nothing here reads pixels except :func:`read_frame`; nothing imports ROS or rosbags.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from aliked_ros import validation
from aliked_ros.errors import AlikedError
from aliked_ros.imaging import IMAGE_SUFFIXES, is_hidden, read_image

FORMATS = ("auto", "tum", "kitti", "folder")
MAX_STAMP_NS = 2**31 * 1_000_000_000  # builtin_interfaces/Time: int32 seconds
DEFAULT_RATE_HZ = 10.0  # KITTI's camera rate; also the default of a folder of images
DEFAULT_START_TIME = 1.0  # seconds added to relative times: see the module's convention

TUM_TOPIC = "/camera/rgb/image_color"  # as in the TUM bags and config/tum.yaml
TUM_FRAME_ID = "openni_rgb_optical_frame"  # the TUM bags' frame, without ROS 1's leading slash
KITTI_TOPICS = {"image_0": "/kitti/camera_gray_left/image_raw", "image_2": "/kitti/camera_color_left/image_raw"}
KITTI_FRAME_IDS = {"image_0": "camera_gray_left", "image_2": "camera_color_left"}
KITTI_CALIB_ROWS = {"image_0": "P0", "image_1": "P1", "image_2": "P2", "image_3": "P3"}
FOLDER_TOPIC = "/camera/image_raw"
FOLDER_FRAME_ID = "camera"


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera with plumb_bob distortion (OpenCV's k1, k2, p1, p2, k3), as sensor_msgs/CameraInfo holds it.

    ``projection`` is the 3×4 matrix P (KITTI's calib rows); None means ``[K | 0]``.
    """

    name: str
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    projection: tuple[float, ...] | None = None

    def camera_matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def projection_matrix(self) -> np.ndarray:
        if self.projection is not None:
            return np.array(self.projection, dtype=np.float64).reshape(3, 4)
        return np.hstack([self.camera_matrix(), np.zeros((3, 1))])


# The RGB cameras of the TUM RGB-D benchmark ("File Formats", intrinsic camera calibration of the Kinect). Their
# images are not undistorted, except fr3's, which the TUM team publish with zero distortion.
TUM_CAMERAS = {
    "tum-fr1": Intrinsics("tum-fr1", 517.3, 516.5, 318.6, 255.3, (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)),
    "tum-fr2": Intrinsics("tum-fr2", 520.9, 521.0, 325.1, 249.7, (0.2312, -0.7849, -0.0033, -0.0001, 0.9172)),
    "tum-fr3": Intrinsics("tum-fr3", 535.4, 539.2, 320.1, 247.6),
}
CAMERA_CHOICES = ("auto", *TUM_CAMERAS, "none")


@dataclass(frozen=True)
class Frame:
    path: Path
    stamp_ns: int


@dataclass(frozen=True)
class ImageSequence:
    format: str  # tum, kitti or folder
    frames: list[Frame]
    intrinsics: Intrinsics | None
    topic: str  # the dataset's usual image topic
    frame_id: str
    notes: list[str] = field(default_factory=list)  # what was assumed, for the user to read


def seconds_to_ns(text: str) -> int:
    """``'1311868169.163498'`` → 1311868169163498000, exactly (no float rounding)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise AlikedError(f"{text!r} is not a time in seconds.") from None
    if not value.is_finite() or value < 0:
        raise AlikedError(f"{text!r} is not a time in seconds at or after 0.")
    return int(value * 1_000_000_000)


def read_frame(frame: Frame) -> np.ndarray:
    """The frame's pixels as the file stores them: RGB uint8 (H, W, 3) or grayscale uint8 (H, W)."""
    image = read_image(frame.path)
    if image.ndim == 3 and image.shape[2] != 3:
        raise AlikedError(f"{frame.path} has {image.shape[2]} channels; images-to-bag takes grey or RGB images.")
    return image


def image_files(directory: Path) -> list[Path]:
    """The image files of ``directory`` in name order, hidden ones (macOS's ``._000100.png``) left out."""
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(p))


def _is_timestamp_name(path: Path) -> bool:
    return re.fullmatch(r"\d{9,10}\.\d+", path.stem) is not None  # Unix seconds with a fraction, as TUM names them


def _is_kitti_name(path: Path) -> bool:
    return re.fullmatch(r"\d{6}", path.stem) is not None


def _kitti_dirs(source: Path) -> tuple[Path, Path] | None:
    """(image folder, sequence folder) of a KITTI sequence given as the sequence or as one of its image folders."""
    if source.name in KITTI_CALIB_ROWS and (source.parent / "times.txt").is_file():
        return source, source.parent
    for name in ("image_0", "image_2"):
        if (source / name).is_dir():
            return source / name, source
    return None


def detect_format(source: Path) -> tuple[str, str]:
    """(format, the reason) for a sequence directory."""
    if (source / "rgb.txt").is_file():
        return "tum", "rgb.txt found"
    if _kitti_dirs(source) is not None or (source / "times.txt").is_file():
        return "kitti", "a KITTI image_N folder or times.txt found"
    files = image_files(source)
    if files and all(_is_timestamp_name(p) for p in files):
        return "tum", "image names are timestamps"
    if files and all(_is_kitti_name(p) for p in files):
        return "kitti", "image names are 6-digit frame numbers"
    return "folder", "no TUM or KITTI layout found"


def tum_camera_from_path(source: Path) -> str | None:
    """tum-fr1/2/3 from a TUM download's name (``rgbd_dataset_freiburg2_desk``, ``fr3_office``), else None."""
    for part in reversed(source.resolve().parts):
        match = re.search(r"(?:freiburg|(?<![a-z])fr)([123])(?!\d)", part.lower())
        if match:
            return f"tum-fr{match.group(1)}"
    return None


def _relative_frames(paths: list[Path], rate_hz: float, start_time: float, numbered: bool = False) -> list[Frame]:
    """Frames ``1 / rate_hz`` apart from ``start_time``; ``numbered`` takes each file's name as its frame number
    (KITTI's 000100.png is frame 100), so a part of a sequence keeps its place in time."""
    rate_hz = validation.rate_hz(rate_hz, "--rate")
    start = seconds_to_ns(str(start_time))
    indices = [int(path.stem) for path in paths] if numbered else range(len(paths))
    return [Frame(path, start + round(index * 1e9 / rate_hz)) for index, path in zip(indices, paths)]


def read_tum(source: Path, camera: str) -> ImageSequence:
    notes = []
    listing = source / "rgb.txt"
    if listing.is_file():
        frames = []
        for number, line in enumerate(listing.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split()
            if len(fields) < 2:
                raise AlikedError(f"{listing}:{number} is not 'timestamp filename': {line!r}.")
            frames.append(Frame(source / fields[1], seconds_to_ns(fields[0])))
        missing = [frame.path for frame in frames if not frame.path.is_file()]
        if missing:
            raise AlikedError(f"{listing} names {len(missing)} missing image(s), the first {missing[0]}; "
                              "extract the whole TUM archive.")
    else:
        frames = [Frame(path, seconds_to_ns(path.stem)) for path in image_files(source) if _is_timestamp_name(path)]
    frames.sort(key=lambda frame: frame.stamp_ns)
    if camera == "auto":
        detected = tum_camera_from_path(source)
        if detected is None:
            notes.append("no freiburg1/2/3 in the path, so no CameraInfo: choose one with --camera tum-fr1|2|3")
        else:
            notes.append(f"camera {detected} (from the path name)")
        camera = detected or "none"
    intrinsics = TUM_CAMERAS.get(camera)
    return ImageSequence("tum", frames, intrinsics, TUM_TOPIC, TUM_FRAME_ID, notes)


def parse_kitti_calib(path: Path, row: str) -> Intrinsics:
    """Intrinsics from the ``row`` (P0 ... P3) of a KITTI odometry ``calib.txt``: 12 values, P row-major."""
    for line in path.read_text().splitlines():
        key, _, values = line.partition(":")
        if key.strip() == row:
            try:
                numbers = tuple(float(value) for value in values.split())
            except ValueError:
                numbers = ()
            if len(numbers) != 12:
                raise AlikedError(f"{path}: {row} must hold 12 numbers (the 3x4 projection matrix).")
            # KITTI odometry images are rectified: no distortion; P keeps the stereo baseline term of P1..P3.
            return Intrinsics(f"kitti-{row}", numbers[0], numbers[5], numbers[2], numbers[6], projection=numbers)
    raise AlikedError(f"{path} has no {row} line; is it a KITTI odometry calib.txt?")


def read_times(path: Path, count: int) -> list[int]:
    """The first ``count`` times of a KITTI ``times.txt`` (seconds, one a line) in nanoseconds."""
    try:
        times = [seconds_to_ns(token) for token in path.read_text().split()]
    except AlikedError as error:
        raise AlikedError(f"{path}: {error} It must hold one time in seconds a line.") from None
    if len(times) < count:
        raise AlikedError(f"{path} holds {len(times)} times for {count} images; it must have one per image.")
    return times[:count]


def kitti_camera(image_dir: Path, paths: list[Path], notes: list[str]) -> str:
    """Which KITTI camera the frames come from, image_0 (grey left) or image_2 (colour left): the folder's name
    where it is one of them, checked against the first frame; else the first frame's pixels decide."""
    if not paths:
        return image_dir.name if image_dir.name in KITTI_TOPICS else "image_0"
    colour = read_frame(Frame(paths[0], 0)).ndim == 3
    pixels = "colour" if colour else "grey"
    if image_dir.name in KITTI_TOPICS:
        if (image_dir.name == "image_2") != colour:
            raise AlikedError(f"{paths[0]} is {pixels}, but {image_dir.name}/ holds KITTI's "
                              f"{'colour' if image_dir.name == 'image_2' else 'grey'} camera; give the folder of "
                              "the right camera, or --format folder for other images.")
        return image_dir.name
    camera = "image_2" if colour else "image_0"
    notes.append(f"{pixels} frames: KITTI's {pixels} left camera ({camera})")
    return camera


def read_kitti(source: Path, camera: str, rate_hz: float | None, start_time: float) -> ImageSequence:
    notes = []
    image_dir, sequence_dir = _kitti_dirs(source) or (source, source)  # else a bare folder of frames
    paths = image_files(image_dir)
    kitti_dir = kitti_camera(image_dir, paths, notes)
    topic, frame_id = KITTI_TOPICS[kitti_dir], KITTI_FRAME_IDS[kitti_dir]
    times_file = sequence_dir / "times.txt"
    if times_file.is_file() and rate_hz is None:
        start = seconds_to_ns(str(start_time))
        frames = [Frame(path, start + time) for path, time in zip(paths, read_times(times_file, len(paths)))]
        notes.append(f"stamps from {times_file.name} + {start_time:g} s (--start-time)")
    else:
        rate_hz = DEFAULT_RATE_HZ if rate_hz is None else rate_hz
        numbered = bool(paths) and all(_is_kitti_name(path) for path in paths)
        frames = _relative_frames(paths, rate_hz, start_time, numbered)
        reason = "--rate given" if times_file.is_file() else f"no times.txt, so {rate_hz:g} Hz (--rate)"
        first = "frame number" if numbered else "position"
        notes.append(f"{reason}: stamp = {start_time:g} s (--start-time) + {first} / {rate_hz:g} Hz")
    intrinsics = None
    calib = sequence_dir / "calib.txt"
    if camera in TUM_CAMERAS:
        intrinsics = TUM_CAMERAS[camera]
    elif camera == "auto" and calib.is_file():
        intrinsics = parse_kitti_calib(calib, KITTI_CALIB_ROWS[kitti_dir])
        notes.append(f"intrinsics from {calib.name} ({intrinsics.name[6:]})")
    elif camera == "auto":
        notes.append("no calib.txt, so no CameraInfo")
    return ImageSequence("kitti", frames, intrinsics, topic, frame_id, notes)


def read_folder(source: Path, camera: str, rate_hz: float | None, start_time: float) -> ImageSequence:
    rate_hz = DEFAULT_RATE_HZ if rate_hz is None else rate_hz
    notes = [f"frames in name order at {rate_hz:g} Hz (--rate) from {start_time:g} s (--start-time)"]
    frames = _relative_frames(image_files(source), rate_hz, start_time)
    return ImageSequence("folder", frames, TUM_CAMERAS.get(camera), FOLDER_TOPIC, FOLDER_FRAME_ID, notes)


def load_sequence(source: str | Path, image_format: str = "auto", camera: str = "auto",
                  rate_hz: float | None = None, start_time: float | None = None) -> ImageSequence:
    """The sequence at ``source``; ``camera`` is auto (the dataset's own intrinsics), tum-fr1/2/3 or none;
    ``rate_hz`` and ``start_time`` (None: the defaults) time sequences without absolute stamps."""
    source = Path(source)
    if not source.is_dir():
        what = "is a file" if source.exists() else "does not exist"
        raise AlikedError(f"{source} {what}; give the directory of a TUM or KITTI sequence or of images.")
    if image_format not in FORMATS:
        raise AlikedError(f"--format must be one of {', '.join(FORMATS)}, not {image_format!r}.")
    if camera not in CAMERA_CHOICES:
        raise AlikedError(f"--camera must be one of {', '.join(CAMERA_CHOICES)}, not {camera!r}.")
    if rate_hz is not None:
        validation.rate_hz(rate_hz, "--rate")  # 0 is not "the default"
    if start_time is not None:
        seconds_to_ns(str(validation.number(start_time, "--start-time")))
    notes = []
    if image_format == "auto":
        image_format, reason = detect_format(source)
        notes.append(f"format {image_format} ({reason}; --format chooses)")
    if image_format == "tum":
        if rate_hz is not None or start_time is not None:
            raise AlikedError("--rate and --start-time do not apply to TUM sequences: their stamps are the dataset's.")
        sequence = read_tum(source, camera)
    elif image_format == "kitti":
        sequence = read_kitti(source, camera, rate_hz, DEFAULT_START_TIME if start_time is None else start_time)
    else:
        sequence = read_folder(source, camera, rate_hz, DEFAULT_START_TIME if start_time is None else start_time)
    if not sequence.frames:
        raise AlikedError(f"{source} holds no {image_format} images ({', '.join(IMAGE_SUFFIXES)}).")
    check_stamps_fit(sequence.frames)
    return dataclasses.replace(sequence, notes=notes + sequence.notes)


def check_stamps_fit(frames: list[Frame]) -> None:
    """AlikedError, before any bag is written, where a stamp is beyond what a ROS 2 header holds: its seconds are an
    int32 (builtin_interfaces/Time), so the last stamp must come before 2**31 s (January 2038)."""
    last = max(frame.stamp_ns for frame in frames)
    if last >= MAX_STAMP_NS:
        raise AlikedError(f"The last frame's stamp would be {last / 1e9:.6g} s, past what a ROS 2 stamp holds "
                          f"({MAX_STAMP_NS // 1_000_000_000 - 1} s, in 2038); choose a smaller --start-time or a "
                          "higher --rate.")
