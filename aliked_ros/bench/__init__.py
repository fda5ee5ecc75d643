"""Benchmarks: host-to-host latency, GPU memory and message-building time of every engine, beside kornia's ALIKED
in the same process. The logic of ``aliked-ros bench``, without ROS.

Convention:
    - A *group* is one model × K × image set; a *row* is one engine or reference measured in a group. Rows of a group
      see the same frames, in the same order, in the same process, so the ratios between them are taken in one run.
    - Latency is host to host: an RGB uint8 ``(H, W, 3)`` frame in host memory in, features in host memory out
      (``Extractor.extract`` for engines; for kornia the upload, ``float() / 255``, the network and the copy of its
      outputs to numpy), timed with ``time.perf_counter`` around that one call. Frames are cycled. Grayscale frames
      (KITTI) are made RGB once, before timing, for every row alike.
    - Statistics are over the timed frames after warm-up: median, mean and p95 (numpy's linear interpolation), in ms.
      A ratio is a reference's median over the row's median: above 1, the row is faster.
    - GPU memory, per row: the process's memory as the driver reports it (NVML, through nvidia-ml-py's ``pynvml``)
      at the end of the row, with its growth over the row; and ``torch.cuda.max_memory_allocated`` since the row's
      start, for rows whose memory torch allocates (torch engines, kornia). None where not measured.
    - The message time is the median time to build one Keypoints message from the row's last Features, with the
      message class the caller gives (rclpy's where it imports, else rosbags').
    - Nothing in a report is written by hand: every number comes from a :class:`~aliked_ros.bench.records.Measurement`.

Modules, one concern each:
    - :mod:`~aliked_ros.bench.specs`: what a row is (engines and references by name) and which rows run here.
    - :mod:`~aliked_ros.bench.machine`: what this machine has (device, runtimes) and its description for the report.
    - :mod:`~aliked_ros.bench.images`: the image sets the rows are timed on.
    - :mod:`~aliked_ros.bench.timing`: the timing loop, latency statistics and the message-building time.
    - :mod:`~aliked_ros.bench.memory`: the process's GPU memory by NVML.
    - :mod:`~aliked_ros.bench.references`: the reference implementations (kornia's ALIKED).
    - :mod:`~aliked_ros.bench.runners`: a row opened as one callable, engine or reference alike.
    - :mod:`~aliked_ros.bench.profiler`: where a row's frames spend their time, by torch.profiler.
    - :mod:`~aliked_ros.bench.records`: what a run records (a Measurement per row) and the ratios between rows.
    - :mod:`~aliked_ros.bench.run`: the run: every planned row of every group, measured in turn.
    - :mod:`~aliked_ros.bench.report`: the markdown report and the JSON record of a run.

torch and the runtimes are imported only inside the functions that need them.
"""

from aliked_ros.bench.images import ImageSet, default_image_sets, directory_image_set
from aliked_ros.bench.report import format_report, result_to_json
from aliked_ros.bench.run import BenchConfig, run_benchmark
from aliked_ros.bench.records import BenchResult, Measurement
from aliked_ros.bench.specs import parse_engines, parse_references
from aliked_ros.bench.timing import MessageBuilder, rosbags_message_builder

__all__ = ["BenchConfig", "BenchResult", "ImageSet", "Measurement", "MessageBuilder", "default_image_sets",
           "directory_image_set", "format_report", "parse_engines", "parse_references", "result_to_json",
           "rosbags_message_builder", "run_benchmark"]
