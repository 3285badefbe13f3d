{#
    Functions that SQL dialects spell differently, behind adapter.dispatch: a default
    implementation in widely supported SQL and one for DuckDB. Another engine adds its own
    `<adapter>__` variant here; the models never change. Date arithmetic uses dbt's own
    cross-database macros (dbt.datediff, dbt.dateadd) and types dbt.type_string().
#}

{% macro iso_timestamp_text(expression) %}
    {{ return(adapter.dispatch('iso_timestamp_text', 'seg_pipeline')(expression)) }}
{% endmacro %}

{% macro default__iso_timestamp_text(expression) %}
    to_char({{ expression }}, 'YYYY-MM-DD"T"HH24:MI:SS')
{% endmacro %}

{% macro duckdb__iso_timestamp_text(expression) %}
    strftime({{ expression }}, '%Y-%m-%dT%H:%M:%S')
{% endmacro %}

{% macro spark__iso_timestamp_text(expression) %}
    date_format({{ expression }}, "yyyy-MM-dd'T'HH:mm:ss")
{% endmacro %}


{% macro most_frequent(expression) %}
    {{ return(adapter.dispatch('most_frequent', 'seg_pipeline')(expression)) }}
{% endmacro %}

{% macro default__most_frequent(expression) %}
    mode() within group (order by {{ expression }})
{% endmacro %}

{% macro duckdb__most_frequent(expression) %}
    mode({{ expression }})
{% endmacro %}

{% macro spark__most_frequent(expression) %}
    {#- Deterministic: of equally frequent values, the smallest. -#}
    mode({{ expression }}, true)
{% endmacro %}


{% macro median_of(expression) %}
    {{ return(adapter.dispatch('median_of', 'seg_pipeline')(expression)) }}
{% endmacro %}

{% macro default__median_of(expression) %}
    percentile_cont(0.5) within group (order by {{ expression }})
{% endmacro %}

{% macro duckdb__median_of(expression) %}
    median({{ expression }})
{% endmacro %}

{% macro spark__median_of(expression) %}
    median({{ expression }})
{% endmacro %}


{% macro days_before(days, date_expression) %}
    {#- The date `days` days before a date, as a date (dbt.dateadd may return a timestamp). -#}
    cast({{ dbt.dateadd('day', -days, date_expression) }} as date)
{% endmacro %}
