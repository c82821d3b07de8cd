"""Export of trained runs: ONNX (plugin node or portable scan) and running plugin graphs on ONNX Runtime."""

from partool.export.onnx_export import export_onnx, export_run

__all__ = ["export_onnx", "export_run"]
