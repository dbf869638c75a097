// Issue 12 bindings: the class embedding launchers (csrc/embedding.cu). Included by bindings.cpp
// only (inside PYGAN_HAVE_KERNELS, after bindings.cpp's Array / array_arg / bad / shape_str); it
// follows that file's rules: validate every argument (array_arg, shapes against each other) before
// a launcher touches memory, raise ValueError naming the argument, release the GIL for the launch.
// indices must be int64 (the Python wrapper, pygan/ops/native.py, converts other integer dtypes)
// and may have any shape; the rows go with indices.shape + (dim,). The index VALUES live in device
// memory and are not read here: the kernels guard them (NaN instead of an out-of-bounds access).
#pragma once

namespace {

// indices.shape + (dim,): the shape of y in the forward and of dy in the backward.
std::vector<std::int64_t> rows_shape(const Array& indices, std::int64_t dim) {
  std::vector<std::int64_t> shape = indices.shape;
  shape.push_back(dim);
  return shape;
}

// A 2-D (num_classes, dim) table (weight or dweight).
void table_arg(const std::string& op, const Array& a, const std::string& name) {
  if (a.shape.size() != 2)
    bad(op, name, "must be 2-D (num_embeddings, embedding_dim), got shape " + shape_str(a.shape));
}

void rows_arg(const std::string& op, const Array& rows, const std::string& rows_name, const Array& indices,
              std::int64_t dim) {
  const std::vector<std::int64_t> expected = rows_shape(indices, dim);
  if (rows.shape != expected)
    bad(op, rows_name, "has shape " + shape_str(rows.shape) + ", expected indices.shape + (embedding_dim,) = " +
                           shape_str(expected));
}

void def_embedding(py::module_& m, py::dict& variants) {
  m.def("embedding_variants", &pygan::embedding_variants, "Names of the embedding kernel variants (1-based).");
  variants["embedding"] = pygan::embedding_variants();
  m.def(
      "embedding_forward",
      [](py::handle weight, py::handle indices, py::handle y, int variant, std::uintptr_t stream) {
        const std::string op = "embedding_forward";
        const Array aw = array_arg(weight, op, "weight"), ai = array_arg(indices, op, "indices", false, kInt64);
        const Array ay = array_arg(y, op, "y", true);
        table_arg(op, aw, "weight");
        const std::int64_t num_classes = aw.shape[0], dim = aw.shape[1];
        rows_arg(op, ay, "y", ai, dim);
        py::gil_scoped_release release;
        pygan::embedding_forward(aw.data(), ai.i64(), ay.data(), ai.size, num_classes, dim, variant, stream);
      },
      py::arg("weight"), py::arg("indices"), py::arg("y"), py::arg("variant") = 0, py::arg("stream") = 0,
      "y = weight[indices] into the preallocated y (indices.shape + (embedding_dim,)); indices int64. An index "
      "outside [0, num_embeddings) is not read through: its row of y is NaN.");
  m.def(
      "embedding_backward",
      [](py::handle dy, py::handle indices, py::handle dweight, int variant, std::uintptr_t stream) {
        const std::string op = "embedding_backward";
        const Array ady = array_arg(dy, op, "dy"), ai = array_arg(indices, op, "indices", false, kInt64);
        const Array adw = array_arg(dweight, op, "dweight", true);
        table_arg(op, adw, "dweight");
        const std::int64_t num_classes = adw.shape[0], dim = adw.shape[1];
        rows_arg(op, ady, "dy", ai, dim);
        py::gil_scoped_release release;
        pygan::embedding_backward(ady.data(), ai.i64(), adw.data(), ai.size, num_classes, dim, variant, stream);
      },
      py::arg("dy"), py::arg("indices"), py::arg("dweight"), py::arg("variant") = 0, py::arg("stream") = 0,
      "dweight (preallocated, (num_embeddings, embedding_dim); every element written) = the rows of dy added "
      "into the rows named by indices (int64). An index outside [0, num_embeddings) makes all of dweight NaN.");
}

}  // namespace
