"""The demo notebook: a small real model trained on a remote Walnut kernel."""

from __future__ import annotations

import nbformat

CELLS = [
    ("markdown", "# Walnut demo: train on someone else's machine\n"
                 "This notebook's kernel runs in a **Walnut session** on a provider, paid by the "
                 "second from your wallet through a payment channel. Run all cells, then look "
                 "at the Walnut panel on the left for the live cost."),
    ("code", "import os, platform, socket\n"
             "print('kernel host  :', socket.gethostname(), platform.platform())\n"
             "print('session      :', os.environ.get('WALNUT_SESSION_ID'))\n"
             "print('provider node:', os.environ.get('WALNUT_NODE'),"
             " '· shape', os.environ.get('WALNUT_SHAPE'))"),
    ("code", "import time\nt0 = time.time()\n"
             "from sklearn.datasets import load_digits\n"
             "from sklearn.model_selection import train_test_split\n"
             "from sklearn.neural_network import MLPClassifier\n"
             "X, y = load_digits(return_X_y=True)\n"
             "X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25,"
             " random_state=0)\n"
             "model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=0)\n"
             "model.fit(X_train, y_train)\n"
             "accuracy = model.score(X_test, y_test)\n"
             "print(f'trained on {len(X_train)} digits in {time.time() - t0:.1f}s: "
             "test accuracy {accuracy:.3f}')"),
    ("code", "%matplotlib inline\nimport matplotlib.pyplot as plt\n"
             "fig, axes = plt.subplots(2, 8, figsize=(10, 3))\n"
             "predicted = model.predict(X_test[:16])\n"
             "for ax, image, guess, truth in zip(axes.flat, X_test[:16], predicted, y_test[:16]):\n"
             "    ax.imshow(image.reshape(8, 8), cmap='gray_r')\n"
             "    ax.set_title(f'{guess}' + ('' if guess == truth else f' ({truth})'),"
             " color='black' if guess == truth else 'red')\n"
             "    ax.axis('off')\n"
             "fig.suptitle('predictions on held-out digits (red: wrong)')\nplt.show()"),
    ("code", "price = int(os.environ.get('WALNUT_PRICE_MIST_PER_SECOND', '0'))\n"
             "seconds = int(time.time() - t0)\n"
             "mist = price * seconds\n"
             "print(f'this work took {seconds}s at {price} MIST/s: about {mist} MIST "
             "= {mist / 1e9:.6f} SUI')\n"
             "print('the exact metered cost is in the Walnut panel, and settles when you stop "
             "the session')"),
]


def demo_notebook(kernel_name: str, display_name: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": display_name,
                                 "language": "python"}
    for kind, source in CELLS:
        maker = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        nb.cells.append(maker(source))
    return nb
