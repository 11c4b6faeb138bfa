"""The model server as the worker sees it: the one HTTP client (client.py) and its options
(client_options.py), chat messages every template accepts (chat_messages.py), and log-probabilities
read out of vLLM's replies (logprobs.py).

Imports constants and errors only; imported by run/ and pipelines/.
"""
