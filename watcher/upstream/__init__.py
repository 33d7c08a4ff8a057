"""The APIXO status API: the pooled client, classification of answers, a local fake."""
